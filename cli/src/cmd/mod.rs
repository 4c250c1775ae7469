//! One module per subcommand.

pub mod adopt;
pub mod call;
pub mod disown;
pub mod enroll;
pub mod grant;
pub mod grants;
pub mod id;
pub mod init;
pub mod jobs;
pub mod join;
pub mod keys;
pub mod ls;
pub mod push;
pub mod receipts;
pub mod result;
pub mod revoke;
pub mod subscribe;
pub mod sync;
pub mod up;
pub mod why;
