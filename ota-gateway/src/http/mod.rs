//! The HTTP pieces every surface shares: downloads of mapped bodies with Range and ETag
//! ([`download`]), the generic error answer ([`error`]), write secrets ([`auth`]) and
//! the write guard built on them ([`write`]), query strings ([`query`]) and reading
//! what a refused write left unread ([`unread`]). Nothing here knows about firmware,
//! streams or stores.

pub mod auth;
pub mod download;
pub mod error;
pub mod query;
pub mod unread;
pub mod write;

pub use download::Download;
pub use error::Error;
