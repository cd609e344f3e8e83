//! The HTTP pieces every surface shares: downloads of mapped bodies ([`download`]),
//! the generic error answer ([`error`]), write authorization ([`auth`]) and query
//! strings ([`query`]). Nothing here knows about firmware, streams or stores.

pub mod auth;
pub mod download;
pub mod error;
pub mod query;

pub use download::Download;
pub use error::Error;
