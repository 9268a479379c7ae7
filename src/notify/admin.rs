//! The admin interface: a Unix socket (mode 0600, in the state directory, never on the network) taking
//! one JSON request per connection and answering one JSON line. It manages silences; `credit-sentinel
//! silence ...` is its client.
//!
//! Requests: `{"op":"add","matchers":{..},"author":"..","comment":"..","ends_at":"RFC 3339"[,"starts_at":..]}`,
//! `{"op":"list"}`, `{"op":"expire","id":"..","author":".."}`. A request is at most [`MAX_REQUEST`] bytes
//! and must arrive within 5 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Notifier;
use super::dispatch::Silence;
use super::route::Matchers;
use crate::time::{format_rfc3339, parse_rfc3339};

/// Longest request accepted, in bytes.
pub const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Add {
        matchers: Box<Matchers>,
        author: String,
        comment: String,
        #[serde(default)]
        starts_at: Option<String>,
        ends_at: String,
    },
    List,
    Expire {
        id: String,
        author: String,
    },
}

/// A silence as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: String,
    pub matchers: String,
    pub author: String,
    pub comment: String,
    pub starts_at: String,
    pub ends_at: String,
    pub created_at: String,
    pub active: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silences: Option<Vec<SilenceView>>,
}

impl Response {
    fn error(e: impl Into<String>) -> Response {
        Response { ok: false, error: Some(e.into()), ..Default::default() }
    }
}

/// Answers one request line as read from the socket (`fuzz/` drives this with arbitrary bytes).
pub fn answer(notifier: &Notifier, line: &[u8]) -> Response {
    if line.len() as u64 > MAX_REQUEST {
        notifier.stats.limits.hit(crate::limits::Limit::AdminRequest, "an admin request refused");
        return Response::error(format!("request longer than {MAX_REQUEST} bytes"));
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(request) => handle(notifier, request),
        Err(e) => Response::error(format!("bad request: {e}")),
    }
}

/// Answers one request.
pub fn handle(notifier: &Notifier, request: Request) -> Response {
    let now = crate::daemon::wall_now();
    match request {
        Request::Add { matchers, author, comment, starts_at, ends_at } => {
            let parse = |s: &str| parse_rfc3339(s).map_err(|e| format!("time {s:?}: {e}"));
            let result = (|| {
                let starts = starts_at.as_deref().map(parse).transpose()?.unwrap_or(now);
                let ends = parse(&ends_at)?;
                notifier.add_silence(*matchers, author, comment, starts, ends)
            })();
            match result {
                Ok(id) => Response { ok: true, id: Some(id), ..Default::default() },
                Err(e) => Response::error(e),
            }
        }
        Request::List => Response {
            ok: true,
            silences: Some(notifier.silences().iter().map(|s| view(s, now)).collect()),
            ..Default::default()
        },
        Request::Expire { id, author } => match notifier.expire_silence(&id, &author) {
            Ok(()) => Response { ok: true, id: Some(id), ..Default::default() },
            Err(e) => Response::error(e),
        },
    }
}

fn view(s: &Silence, now: i64) -> SilenceView {
    SilenceView {
        id: s.id.clone(),
        matchers: s.matchers.describe(),
        author: s.author.clone(),
        comment: s.comment.clone(),
        starts_at: format_rfc3339(s.starts_at),
        ends_at: format_rfc3339(s.ends_at),
        created_at: format_rfc3339(s.created_at),
        active: s.active(now),
    }
}

/// Binds the socket (replacing a stale one) with mode 0600 and serves it on its own thread until the
/// process ends.
pub fn serve(path: &Path, notifier: Arc<Notifier>) -> std::io::Result<PathBuf> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!("{}: another daemon is listening", path.display())));
        }
        std::fs::remove_file(path)?;
    }
    // Bound under a temporary name, restricted to the owner, then renamed into place: the socket is never
    // reachable with wider permissions.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    let path = path.to_owned();
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(error) = serve_one(stream, &notifier) {
                        tracing::warn!(%error, "admin request failed");
                    }
                }
                Err(error) => tracing::warn!(%error, "admin socket accept failed"),
            }
        }
    })?;
    Ok(path)
}

fn serve_one(stream: UnixStream, notifier: &Notifier) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = Vec::new();
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST + 1));
    reader.read_until(b'\n', &mut line)?;
    let response = answer(notifier, &line);
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// The client side: sends `request` to the daemon at `socket`.
pub fn call(socket: &Path, request: &Request) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e} (is the daemon running?)", socket.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut bytes = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::other(format!("bad response: {e}")))
}
