//! TLS on node-to-node connections (`tls-enabled yes`).
//!
//! Nodes reach each other at their Redis TLS port (the addresses given to
//! INIT, JOIN and `addr` are TLS ports then), with Redis's own settings:
//! tls-ca-cert-file / tls-ca-cert-dir to verify the other node, and
//! tls-client-cert-file + tls-client-key-file, or else tls-cert-file +
//! tls-key-file, as this node's certificate (with tls-client-key-file-pass
//! or tls-key-file-pass for an encrypted key). They are read with CONFIG GET
//! on the main thread at load and once a second after, so a changed setting
//! or file is used from the next connection on, as Redis does for its port.
//!
//! OpenSSL, the system library, rather than rustls: redis-server accepts
//! TLS through that same library, so a node accepts as a client what its
//! Redis accepts as a server: X.509 v1 certificates (what a plain
//! `openssl x509 -req` makes, which rustls refuses), encrypted PEM keys,
//! hashed CA directories, the same protocol versions and ciphers.
//!
//! What is verified: the other node's certificate chain must lead to the
//! configured CA (never the system's store). Host names are not checked,
//! as Redis does not for its replication and cluster links: every
//! certificate the CA signed is a node of the cluster.

use std::ffi::c_void;
use std::time::SystemTime;

use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{SslContext, SslMethod, SslMode, SslOptions, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use parking_lot::{Mutex, RwLock};
use redis_module::{raw, Context, RedisValue};

use crate::resp::{tls_reason, Connection, RespError};

/// Redis's TLS settings that a node's outgoing connections use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_cert_file: String,
    pub ca_cert_dir: String,
    pub cert_file: String,
    pub key_file: String,
    pub key_file_pass: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub client_key_file_pass: String,
}

impl TlsSettings {
    /// From `CONFIG GET tls-*` as name, value pairs (others are ignored).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> TlsSettings {
        let mut s = TlsSettings::default();
        for (name, value) in pairs {
            let field = match name {
                "tls-ca-cert-file" => &mut s.ca_cert_file,
                "tls-ca-cert-dir" => &mut s.ca_cert_dir,
                "tls-cert-file" => &mut s.cert_file,
                "tls-key-file" => &mut s.key_file,
                "tls-key-file-pass" => &mut s.key_file_pass,
                "tls-client-cert-file" => &mut s.client_cert_file,
                "tls-client-key-file" => &mut s.client_key_file,
                "tls-client-key-file-pass" => &mut s.client_key_file_pass,
                _ => continue,
            };
            *field = value.to_string();
        }
        s
    }

    /// The certificate, key and key password this node presents, with the
    /// setting names for errors: the client pair when both are set, as
    /// Redis does for its own outgoing connections.
    fn identity(&self) -> [(&'static str, &str); 3] {
        if !self.client_cert_file.is_empty() && !self.client_key_file.is_empty() {
            [
                ("tls-client-cert-file", &self.client_cert_file),
                ("tls-client-key-file", &self.client_key_file),
                ("tls-client-key-file-pass", &self.client_key_file_pass),
            ]
        } else {
            [
                ("tls-cert-file", &self.cert_file),
                ("tls-key-file", &self.key_file),
                ("tls-key-file-pass", &self.key_file_pass),
            ]
        }
    }

    /// The files these settings name (modification times tell a changed
    /// file).
    fn files(&self) -> Vec<&str> {
        let [(_, cert), (_, key), _] = self.identity();
        [self.ca_cert_file.as_str(), cert, key]
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect()
    }

    /// A client context for node connections; the error names the setting
    /// and says what is wrong with it.
    pub fn context(&self) -> Result<SslContext, String> {
        let read = |name: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read {name} '{path}': {e}"))
        };
        let mut b = SslContext::builder(SslMethod::tls_client()).map_err(ssl("TLS setup"))?;
        // Redis's default tls-protocols: TLS 1.2 and 1.3.
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(ssl("TLS setup"))?;
        // A write that would block is retried from another buffer (the
        // transport's) and may be retried longer; a peer that closes
        // without a TLS goodbye (redis-server does) is an ordinary close.
        b.set_mode(
            SslMode::AUTO_RETRY
                | SslMode::ACCEPT_MOVING_WRITE_BUFFER
                | SslMode::ENABLE_PARTIAL_WRITE,
        );
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        b.set_verify(SslVerifyMode::PEER);

        if self.ca_cert_file.is_empty() && self.ca_cert_dir.is_empty() {
            return Err("tls-ca-cert-file or tls-ca-cert-dir must be set: nodes verify each other's certificates with it".into());
        }
        if !self.ca_cert_file.is_empty() {
            let pem = read("tls-ca-cert-file", &self.ca_cert_file)?;
            let certs = X509::stack_from_pem(&pem).map_err(ssl(&format!(
                "cannot parse tls-ca-cert-file '{}'",
                self.ca_cert_file
            )))?;
            if certs.is_empty() {
                return Err(format!(
                    "tls-ca-cert-file '{}' holds no PEM certificate",
                    self.ca_cert_file
                ));
            }
            for c in certs {
                b.cert_store_mut()
                    .add_cert(c)
                    .map_err(ssl("tls-ca-cert-file"))?;
            }
        }
        if !self.ca_cert_dir.is_empty() {
            // A hashed directory (c_rehash), read as certificates are needed.
            b.load_verify_locations(None, Some(std::path::Path::new(&self.ca_cert_dir)))
                .map_err(ssl(&format!("tls-ca-cert-dir '{}'", self.ca_cert_dir)))?;
        }

        let [(cert_name, cert), (key_name, key), (_, pass)] = self.identity();
        if cert.is_empty() || key.is_empty() {
            return Err("tls-cert-file and tls-key-file (or tls-client-cert-file and tls-client-key-file) must be set: a node presents its certificate to the others".into());
        }
        let pem = read(cert_name, cert)?;
        let mut chain = X509::stack_from_pem(&pem)
            .map_err(ssl(&format!("cannot parse {cert_name} '{cert}'")))?
            .into_iter();
        let leaf = chain
            .next()
            .ok_or_else(|| format!("{cert_name} '{cert}' holds no PEM certificate"))?;
        b.set_certificate(&leaf).map_err(ssl(cert_name))?;
        for c in chain {
            b.add_extra_chain_cert(c).map_err(ssl(cert_name))?;
        }
        let pem = read(key_name, key)?;
        // Always with a password (empty if none): without one OpenSSL would
        // ask for it on the terminal.
        let pkey = PKey::private_key_from_pem_passphrase(&pem, pass.as_bytes()).map_err(ssl(
            &format!("cannot load {key_name} '{key}' (wrong or missing password?)"),
        ))?;
        b.set_private_key(&pkey).map_err(ssl(key_name))?;
        b.check_private_key()
            .map_err(ssl(&format!("{key_name} does not match {cert_name}")))?;
        Ok(b.build())
    }
}

/// An OpenSSL error as "<what>: <reason>".
fn ssl(what: &str) -> impl Fn(ErrorStack) -> String + '_ {
    move |e| format!("{what}: {}", tls_reason(&e))
}

/// What the context in use was built from: settings and file times.
type Source = (TlsSettings, Vec<Option<SystemTime>>);

/// The context new node connections use (None until built).
static CONTEXT: RwLock<Option<SslContext>> = RwLock::new(None);
/// What was last read (main thread only): a refresh rebuilds on a change.
static SOURCE: Mutex<Option<Source>> = Mutex::new(None);

const REFRESH_MS: i64 = 1000;

fn enabled() -> bool {
    crate::config::TLS_ENABLED.get()
}

/// Redis's tls-* settings, through one CONFIG GET.
fn read_settings(ctx: &Context) -> TlsSettings {
    let text = |v: &RedisValue| match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => s.clone(),
        RedisValue::StringBuffer(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let items: Vec<String> = match ctx.call("CONFIG", &["GET", "tls-*"]) {
        Ok(RedisValue::Array(v)) => v.iter().map(text).collect(),
        _ => Vec::new(),
    };
    TlsSettings::from_pairs(
        items
            .chunks_exact(2)
            .map(|p| (p[0].as_str(), p[1].as_str())),
    )
}

fn read_source(ctx: &Context) -> Source {
    let s = read_settings(ctx);
    let times = s
        .files()
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect();
    (s, times)
}

/// At load: with tls-enabled yes, builds the context from Redis's settings
/// (an error refuses the load) and starts the refresh timer.
pub fn init(ctx: &Context) -> Result<(), String> {
    if !enabled() {
        return Ok(());
    }
    let port = crate::commands::redis_config(ctx, "tls-port");
    if port.is_empty() || port == "0" {
        return Err("tls-enabled yes needs Redis's tls-port: the other nodes connect to it".into());
    }
    let source = read_source(ctx);
    let tls = source
        .0
        .context()
        .map_err(|e| format!("tls-enabled yes: {e}"))?;
    *CONTEXT.write() = Some(tls);
    *SOURCE.lock() = Some(source);
    crate::ffi::start_timer(ctx.ctx, REFRESH_MS, on_timer);
    Ok(())
}

unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _: *mut c_void) {
    crate::guard::catch(
        "the TLS settings refresh",
        || refresh(&Context::new(ctx)),
        |_| (),
    );
    crate::ffi::start_timer(ctx, REFRESH_MS, on_timer);
}

/// Rebuilds the context when a setting or file changed. A context that
/// cannot be built is logged and the previous one kept, as Redis keeps its
/// own when a CONFIG SET of its TLS files fails.
fn refresh(ctx: &Context) {
    let source = read_source(ctx);
    let mut last = SOURCE.lock();
    if last.as_ref() == Some(&source) {
        return;
    }
    match source.0.context() {
        Ok(tls) => {
            *CONTEXT.write() = Some(tls);
            crate::logging::notice("node TLS: settings changed, new node connections use them");
        }
        Err(e) => crate::logging::warning(&format!(
            "node TLS: the changed settings cannot be used, keeping the previous ones: {e}"
        )),
    }
    *last = Some(source);
}

/// Connects to another node: over TLS with tls-enabled yes (never falling
/// back to plain text), else plain. Every node-to-node connection (the
/// transport, snapshots, JOIN, the follower proxy, removal notices) is
/// made here.
pub fn connect(
    addr: &str,
    connect_timeout: std::time::Duration,
    io_timeout: std::time::Duration,
    auth: Option<(&str, &str)>,
) -> Result<Connection, RespError> {
    if !enabled() {
        return Connection::connect(addr, connect_timeout, io_timeout, auth);
    }
    let tls = CONTEXT
        .read()
        .clone()
        .ok_or_else(|| RespError::Tls("tls-enabled yes but no usable TLS settings".into()))?;
    Connection::connect_with(addr, connect_timeout, io_timeout, auth, Some(&tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_config_get_pairs_and_prefer_the_client_pair() {
        let s = TlsSettings::from_pairs([
            ("tls-port", "6380"),
            ("tls-cert-file", "node.crt"),
            ("tls-key-file", "node.key"),
            ("tls-ca-cert-file", "ca.crt"),
        ]);
        assert_eq!(s.ca_cert_file, "ca.crt");
        assert_eq!(s.identity()[0], ("tls-cert-file", "node.crt"));
        assert_eq!(s.files(), vec!["ca.crt", "node.crt", "node.key"]);
        let mut c = s.clone();
        c.client_cert_file = "client.crt".into();
        // Redis uses the client pair only when both are set.
        assert_eq!(c.identity()[0], ("tls-cert-file", "node.crt"));
        c.client_key_file = "client.key".into();
        assert_eq!(c.identity()[1], ("tls-client-key-file", "client.key"));
    }

    #[test]
    fn unusable_settings_name_the_setting() {
        let none = TlsSettings::default().context().unwrap_err();
        assert!(
            none.contains("tls-ca-cert-file or tls-ca-cert-dir"),
            "{none}"
        );
        let missing = TlsSettings {
            ca_cert_file: "/nonexistent/ca.crt".into(),
            ..Default::default()
        }
        .context()
        .unwrap_err();
        assert!(
            missing.starts_with("cannot read tls-ca-cert-file '/nonexistent/ca.crt'"),
            "{missing}"
        );
    }
}
