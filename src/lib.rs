//! mailauthd: the auth_http server for nginx's mail proxy.

pub mod hash;
