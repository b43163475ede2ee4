//! The HTTP server against real sockets: the API's answers, object bodies by
//! `sendfile`, ranges, zstd, and HTTP/1.1 framing (pipelining, keep-alive, refusals).

use super::*;
use crate::store::fixture;
use canopy_protocol::ObjectId;
use reqwest::{StatusCode, header};

/// Serves a memory store with one root, as `canopy serve` would, and asks for what
/// a mount asks for.
#[tokio::test(flavor = "multi_thread")]
async fn serves_roots_logs_objects_and_tree_packs_from_any_backend() {
    let (_state, store, tree) = fixture::memory_with(&[("file", b"content")]);
    let commit = fixture::commit(&store, "web", tree);
    let blob = ObjectId::of(b"content");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(store, listener, Options::default(), async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("{url}{path}")).send();

    let json = |b: bytes::Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    let roots = json(
        get("/v1/roots".into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    let roots: Vec<RootInfo> = serde_json::from_value(roots).unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].commit, commit.to_string());
    let log = json(
        get("/v1/roots/web/log".into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    let log: Vec<LogEntry> = serde_json::from_value(log).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].subject, "commit 1");
    let res = get(format!("/v1/objects/{blob}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::ETAG], format!("\"{blob}\"").as_str());
    assert_eq!(&res.bytes().await.unwrap()[..], b"content");
    let pack = get(format!("/v1/trees/{tree}")).await.unwrap();
    assert_eq!(pack.status(), StatusCode::OK);
    let missing = get(format!("/v1/objects/{}", ObjectId::of(b"none")))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = get("/v1/objects/xyz".into()).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A server on a free port of 127.0.0.1; it stops when the returned sender is dropped.
async fn start(store: Store) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(store, listener, Options::default(), async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Sends `request` bytes as they are, closes the sending side, and returns every byte
/// the server sent until it closed.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    out
}

/// One answer read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits what a server sent into answers, by `Content-Length`; `heads` says which
/// answers (by index) were to HEAD requests and so have no body.
fn answers(mut bytes: &[u8], heads: &[usize]) -> Vec<Wire> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let len = if heads.contains(&out.len()) || status == 304 {
            0
        } else {
            len
        };
        out.push(Wire {
            status,
            headers,
            body: bytes[end..end + len].to_vec(),
        });
        bytes = &bytes[end + len..];
    }
    out
}

/// Bytes that zstd cannot shrink (a xorshift stream).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\n{extra}\r\n")
}

/// Objects from a store on disk: whole (inline and by sendfile), HEAD, ranges, 304,
/// zstd computed once with its length, and incompressible objects sent as they are.
#[tokio::test(flavor = "multi_thread")]
async fn object_bodies_ranges_and_zstd_from_files() {
    let text: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .take(300_000)
        .collect();
    let random = noise(200_000);
    let small = b"a small object".to_vec();
    let (_dir, store, _) =
        fixture::local_with(&[("text", &text), ("random", &random), ("small", &small)]);
    let (addr, _stop) = start(store).await;
    let [t, r, s] = [&text, &random, &small].map(|b| ObjectId::of(b));
    let path = |id: &ObjectId| format!("/v1/objects/{id}");

    // Several requests on one connection, sent at once (pipelined).
    let mut req = String::new();
    req += &get(&path(&t), "");
    req += &get(&path(&s), "");
    req += &format!("HEAD {} HTTP/1.1\r\nhost: t\r\n\r\n", path(&r));
    req += &get(&path(&r), "range: bytes=10-19\r\n");
    req += &get(&path(&r), "range: bytes=0-1, 100000-100001\r\n");
    req += &get(&path(&r), "range: bytes=900000-\r\n");
    req += &get(&path(&t), &format!("if-none-match: \"{t}\"\r\n"));
    req += &get(&path(&t), "accept-encoding: gzip, zstd\r\n");
    req += &get(&path(&r), "accept-encoding: zstd\r\n");
    req += &get(&path(&s), "accept-encoding: zstd\r\n");
    req += &get(&path(&t), "accept-encoding: zstd\r\nconnection: close\r\n");
    let got = answers(&raw(addr, req.as_bytes()).await, &[2]);
    assert_eq!(got.len(), 11, "{got:?}");

    assert_eq!((got[0].status, &got[0].body), (200, &text));
    assert_eq!(got[0].header("etag"), Some(format!("\"{t}\"").as_str()));
    assert_eq!(
        got[0].header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!((got[1].status, &got[1].body), (200, &small));
    assert_eq!(got[2].status, 200);
    assert_eq!(got[2].header("content-length"), Some("200000"));
    assert_eq!((got[3].status, &got[3].body[..]), (206, &random[10..20]));
    assert_eq!(got[3].header("content-range"), Some("bytes 10-19/200000"));
    assert_eq!(got[4].status, 206);
    let multipart = String::from_utf8_lossy(&got[4].body);
    assert!(multipart.contains("Content-Range: bytes 100000-100001/200000"));
    assert_eq!(got[5].status, 416);
    assert_eq!(got[5].header("content-range"), Some("bytes */200000"));
    assert_eq!((got[6].status, got[6].body.len()), (304, 0));

    // zstd: compressed once, sent with its length, decompresses to the object.
    assert_eq!(got[7].header("content-encoding"), Some("zstd"));
    assert_eq!(
        got[7].header("etag"),
        Some(format!("\"{t}-zstd\"").as_str())
    );
    assert!(got[7].body.len() < text.len() / 2);
    assert_eq!(zstd::decode_all(&got[7].body[..]).unwrap(), text);
    // Incompressible and tiny objects are sent as they are.
    assert_eq!(got[8].header("content-encoding"), None);
    assert_eq!(got[8].body, random);
    assert_eq!(got[9].header("content-encoding"), None);
    assert_eq!(got[9].body, small);
    assert_eq!(got[10].body, got[7].body);
    assert_eq!(got[10].header("connection"), Some("close"));
}

/// Objects from a backend without files: ranges and zstd work on the verified bytes.
#[tokio::test(flavor = "multi_thread")]
async fn object_ranges_from_memory() {
    let data = noise(50_000);
    let (_state, store, _) = fixture::memory_with(&[("f", &data)]);
    let (addr, _stop) = start(store).await;
    let id = ObjectId::of(&data);
    let req = get(
        &format!("/v1/objects/{id}"),
        "range: bytes=-5\r\nconnection: close\r\n",
    );
    let got = answers(&raw(addr, req.as_bytes()).await, &[]);
    assert_eq!((got[0].status, &got[0].body[..]), (206, &data[49_995..]));
}

/// HTTP/1.1 framing: what is refused is refused with a JSON error and a closed
/// connection, HTTP/1.0 closes unless kept alive, small bodies are skipped.
#[tokio::test(flavor = "multi_thread")]
async fn http_framing_and_refusals() {
    let (_state, store, tree) = fixture::memory_with(&[("file", b"content")]);
    fixture::commit(&store, "web", tree);
    let (addr, _stop) = start(store).await;
    let status = |bytes: Vec<u8>| {
        answers(&bytes, &[])
            .iter()
            .map(|a| a.status)
            .collect::<Vec<_>>()
    };

    // HTTP/1.0: one answer, then the server closes.
    let got = raw(
        addr,
        b"GET /v1/roots HTTP/1.0\r\n\r\nGET /v1/roots HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(status(got), [200]);
    // HTTP/1.0 with keep-alive, and the absolute form.
    let got = raw(
        addr,
        b"GET http://h/v1/roots HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /v1/roots/web?x=1 HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(status(got), [200, 200]);
    // A small body is read and dropped; the next request is answered.
    let got = raw(
        addr,
        b"GET /v1/roots HTTP/1.1\r\ncontent-length: 5\r\n\r\nhelloGET /v1/roots/nope HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(status(got), [200, 404]);
    // Refusals of the framing close the connection: what follows is not answered.
    // Requests that are merely wrong get their answer and the connection goes on.
    for (request, code, closes) in [
        (&b"POST /v1/roots HTTP/1.1\r\n\r\n"[..], 405, false),
        (b"GET /v1/objects/xyz HTTP/1.1\r\n\r\n", 400, false),
        (b"GET /v1/roots/%ff HTTP/1.1\r\n\r\n", 400, false),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404, false),
        (
            b"GET /v1/roots HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            400,
            true,
        ),
        (
            b"GET /v1/roots HTTP/1.1\r\ncontent-length: 1000000\r\n\r\n",
            413,
            true,
        ),
        (
            b"GET /v1/roots HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
            417,
            true,
        ),
        (b"GARBAGE\r\n\r\n", 400, true),
    ] {
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"GET /v1/roots HTTP/1.1\r\n\r\n");
        let got = answers(&raw(addr, &bytes).await, &[]);
        let shown = String::from_utf8_lossy(request);
        assert_eq!(got[0].status, code, "{shown}");
        let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
        assert!(body["code"].is_string(), "{body}");
        assert_eq!(got.len(), if closes { 1 } else { 2 }, "{shown}");
    }
    // A head over the bound is refused with 431.
    let huge = format!(
        "GET /v1/roots HTTP/1.1\r\nx: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(status(raw(addr, huge.as_bytes()).await), [431]);
}

/// Stopping: idle connections close at once, an answer being sent is finished, and
/// no new connection is taken. At the connection cap, the one idle longest is closed
/// for a newcomer, and one that has made a request stays.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_finishes_answers_and_the_cap_closes_the_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = noise(8 << 20);
    let (_dir, store, tree) = fixture::local_with(&[("big", &data)]);
    fixture::commit(&store, "web", tree);
    let big = ObjectId::of(&data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        connections: 2,
        ..Options::default()
    };
    let server = tokio::spawn(serve(store, listener, options, async {
        let _ = stopped.await;
    }));
    let eof = |mut s: tokio::net::TcpStream| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection")
            .map(|_| rest)
    };

    // Cap 2: an idle connection, then one with a request answered; a third arrives
    // and the idle one is closed.
    let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(get("/v1/roots", "").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    busy.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let newcomer = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        eof(idle).await.unwrap(),
        b"",
        "the idle connection is closed"
    );
    drop(newcomer);

    // A large answer under way when the server is told to stop is sent whole.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = get(&format!("/v1/objects/{big}"), "connection: close\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut start = vec![0u8; 4096];
    s.read_exact(&mut start).await.unwrap();
    stop.send(()).unwrap();
    let mut all = start;
    all.extend(eof(s).await.unwrap());
    let got = answers(&all, &[]);
    assert_eq!(got[0].status, 200);
    assert!(got[0].body == data, "the answer is whole");
    // The connection that was kept alive between requests is closed.
    assert!(eof(busy).await.is_ok());
    tokio::time::timeout(GRACE + Duration::from_secs(5), server)
        .await
        .expect("the server returns once its connections ended")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Splits a pack body into (id, bytes) members; `None` bytes for a missing member.
fn members(body: &[u8]) -> Vec<(ObjectId, Option<Vec<u8>>)> {
    use canopy_protocol::pack;
    let count = pack::parse_head(body[..pack::HEAD_LEN].try_into().unwrap()).unwrap();
    let mut rest = &body[pack::HEAD_LEN..];
    let mut out = Vec::new();
    for _ in 0..count {
        let (id, len) = pack::parse_member_head(rest[..pack::MEMBER_HEAD_LEN].try_into().unwrap());
        rest = &rest[pack::MEMBER_HEAD_LEN..];
        if len == pack::MISSING {
            out.push((id, None));
            continue;
        }
        out.push((id, Some(rest[..len as usize].to_vec())));
        rest = &rest[len as usize..];
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last member",
        rest.len()
    );
    out
}

/// Directory packs from files (inline and by sendfile) and from a backend without
/// files: the plan's members in order, each once, large files left out; a missing
/// member is marked and makes the answer uncacheable; 304, 404 past the last part.
#[tokio::test(flavor = "multi_thread")]
async fn directory_packs_from_files_and_memory() {
    let big = noise(canopy_protocol::pack::MEMBER_MAX as usize + 1);
    let mid = noise(100_000);
    let files: [(&str, &[u8]); 5] = [
        ("a", b"first"),
        ("b", &mid),
        ("c", b"first"),
        ("d", &big),
        ("sub/e", b"below"),
    ];
    for (dir, store, tree) in [fixture::local_with(&files), fixture::memory_with(&files)] {
        let local = store.local_path(&ObjectId::of(b"first")).is_some();
        let (addr, _stop) = start(store).await;
        let path = format!("/v1/packs/{tree}/0");
        let mut req = get(&path, "");
        req += &get(
            &path,
            &format!("if-none-match: \"{}-0\"\r\n", tree.0.to_hex()),
        );
        req += &get(&format!("/v1/packs/{tree}/1"), "");
        req += &get(&format!("/v1/packs/{tree}/x"), "connection: close\r\n");
        let got = answers(&raw(addr, req.as_bytes()).await, &[]);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].status, 200);
        assert_eq!(
            got[0].header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(
            members(&got[0].body),
            vec![
                (ObjectId::of(b"first"), Some(b"first".to_vec())),
                (ObjectId::of(&mid), Some(mid.clone())),
            ]
        );
        assert_eq!(got[1].status, 304);
        assert_eq!(got[2].status, 404);
        assert_eq!(got[3].status, 400);
        if local {
            // An object the store lost: marked missing, and not to be cached.
            let lost = dir.path().join("store/objects");
            let hex = ObjectId::of(&mid).to_hex();
            std::fs::remove_file(lost.join(&hex[..2]).join(&hex[2..])).unwrap();
            let got = answers(
                &raw(addr, get(&path, "connection: close\r\n").as_bytes()).await,
                &[],
            );
            assert_eq!(got[0].header("cache-control"), Some("no-store"));
            assert_eq!(members(&got[0].body)[1], (ObjectId::of(&mid), None));
        }
    }
}

/// Profile packs: the files a commit's profile names, in profile order, each content
/// once, large ones and paths the tree lacks left out; 304; 404 for a commit without a
/// profile and past the last part; 400 for a bad part.
#[tokio::test(flavor = "multi_thread")]
async fn profile_packs_follow_the_commits_profile() {
    use canopy_protocol::profile::Profile;
    let big = noise(canopy_protocol::pack::MEMBER_MAX as usize + 1);
    let files: [(&str, &[u8]); 4] = [
        ("a", b"first"),
        ("b", b"second"),
        ("d", &big),
        ("sub/e", b"below"),
    ];
    let (_dir, store, tree) = fixture::local_with(&files);
    let plain = fixture::commit(&store, "r", tree);
    let profile = Profile {
        paths: ["sub/e", "d", "a", "gone", "sub", "b", "a"]
            .map(String::from)
            .to_vec(),
        ..Profile::default()
    };
    let with = crate::profile::set(&store, &"r".parse().unwrap(), Some(&profile), None)
        .unwrap()
        .id;
    let (addr, _stop) = start(store).await;
    let path = format!("/v1/packs/profile/{with}/0");
    let mut req = get(&path, "");
    req += &get(
        &path,
        &format!("if-none-match: \"profile-{}-0\"\r\n", with.0.to_hex()),
    );
    req += &get(&format!("/v1/packs/profile/{with}/1"), "");
    req += &get(&format!("/v1/packs/profile/{plain}/0"), "");
    req += &get(
        &format!("/v1/packs/profile/{with}/x"),
        "connection: close\r\n",
    );
    let got = answers(&raw(addr, req.as_bytes()).await, &[]);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0].status, 200);
    assert_eq!(
        got[0].header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        members(&got[0].body),
        vec![
            (ObjectId::of(b"below"), Some(b"below".to_vec())),
            (ObjectId::of(b"first"), Some(b"first".to_vec())),
            (ObjectId::of(b"second"), Some(b"second".to_vec())),
        ]
    );
    assert_eq!(got[1].status, 304);
    assert_eq!(got[2].status, 404);
    assert_eq!(got[3].status, 404);
    assert_eq!(got[4].status, 400);
}

/// A tree of the commit the store cannot read fails the profile pack with a store error,
/// and no plan is kept: once the tree is back, the same URL answers every member.
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_plan_is_not_kept_when_a_tree_cannot_be_read() {
    use canopy_protocol::EntryKind;
    use canopy_protocol::profile::Profile;
    let (dir, store, tree) = fixture::local_with(&[("a", b"first"), ("sub/e", b"below")]);
    fixture::commit(&store, "r", tree);
    let profile = Profile {
        paths: vec!["a".into(), "sub/e".into()],
        ..Profile::default()
    };
    let with = crate::profile::set(&store, &"r".parse().unwrap(), Some(&profile), None)
        .unwrap()
        .id;
    let top = store.tree(&tree).unwrap();
    let Some(EntryKind::Dir { tree: sub }) = top.get(b"sub").map(|e| e.kind.clone()) else {
        panic!("no sub");
    };
    let hex = sub.0.to_hex();
    let file = walkdir(dir.path())
        .into_iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(&hex[2..]))
        .expect("the tree's file in the store");
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();
    let (addr, _stop) = start(store).await;
    let path = format!("/v1/packs/profile/{with}/0");
    let got = answers(
        &raw(addr, get(&path, "connection: close\r\n").as_bytes()).await,
        &[],
    );
    assert_eq!(got[0].status, 500, "{got:?}");
    std::fs::rename(&aside, &file).unwrap();
    let got = answers(
        &raw(addr, get(&path, "connection: close\r\n").as_bytes()).await,
        &[],
    );
    assert_eq!(got[0].status, 200);
    assert_eq!(members(&got[0].body).len(), 2);
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An object file damaged on disk never leaves whole. Sent whole, it is hashed as it
/// leaves and its last bytes are held back until the whole is found right, so its
/// answer stops short of its length; asked in a range, it is a 500 before any byte
/// leaves; mended, it is served again.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_file_never_leaves_whole() {
    let data = noise(3 << 20);
    let (_dir, store, _) = fixture::local_with(&[("big", &data)]);
    let id = ObjectId::of(&data);
    let file = store.local_path(&id).expect("a store on disk");
    let (addr, _stop) = start(store).await;
    let path = format!("/v1/objects/{id}");
    let whole = get(&path, "connection: close\r\n");
    let write_over = |bytes: &[u8]| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, bytes).unwrap();
    };

    let got = answers(&raw(addr, whole.as_bytes()).await, &[]);
    assert_eq!((got[0].status, &got[0].body), (200, &data));

    // Damaged since it was verified (one byte near the start): checked again.
    let mut bad = data.clone();
    bad[100] ^= 1;
    write_over(&bad);
    let sent = raw(addr, whole.as_bytes()).await;
    let end = sent.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&sent[..end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", data.len())),
        "{head}"
    );
    let body = &sent[end..];
    assert!(
        body.len() < data.len(),
        "a damaged file was sent whole ({} bytes)",
        body.len()
    );
    assert_eq!(
        body,
        &bad[..body.len()],
        "only the file's own bytes, in order"
    );

    let ranged = get(&path, "range: bytes=0-9\r\nconnection: close\r\n");
    let got = answers(&raw(addr, ranged.as_bytes()).await, &[]);
    assert_eq!(
        got[0].status,
        500,
        "{:?}",
        String::from_utf8_lossy(&got[0].body)
    );
    assert!(String::from_utf8_lossy(&got[0].body).contains("corrupt"));

    write_over(&data);
    let got = answers(&raw(addr, whole.as_bytes()).await, &[]);
    assert_eq!((got[0].status, &got[0].body), (200, &data));
    let got = answers(&raw(addr, ranged.as_bytes()).await, &[]);
    assert_eq!((got[0].status, &got[0].body[..]), (206, &data[..10]));
}
