//! One module per subcommand.

pub mod grant;
pub mod grants;
pub mod id;
pub mod init;
pub mod keys;
pub mod revoke;
