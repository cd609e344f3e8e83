//! The HTTP pieces every surface shares: downloads of mapped bodies ([`download`]),
//! the generic error answer ([`error`]), write authorization ([`auth`]), query
//! strings ([`query`]) and reading what a refused write left unread
//! ([`unread`]). Nothing here knows about firmware, streams or stores.

pub mod auth;
pub mod download;
pub mod error;
pub mod query;
pub mod unread;

pub use download::Download;
pub use error::Error;
