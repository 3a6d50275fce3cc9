//! The webhook's serving certificate, reloaded when its files change: the shared
//! [`aegis_net::tls::ReloadingCert`], also used by the Safe.

pub use aegis_net::tls::{ReloadingCert, TlsError};
