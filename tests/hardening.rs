//! Hostile clients: open redirects, sign-in lockout as a denial of service, existence
//! oracles, sessions that outlive a password change, silent refusals and connections
//! that never finish.

mod support;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use support::{set_cookie, web_session, web_sign_in, Berth, ROOT_PASSWORD};

/// A client that shows redirects instead of following them.
fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Targets that leave the site, or that are not valid in a `Location` header at all:
/// each must send the browser to `/`, never elsewhere and never to an error.
const HOSTILE_TARGETS: [&str; 14] = [
    "/\t/evil.example/x",
    "/\t\t/evil.example",
    "//evil.example/x",
    "/\\evil.example",
    "\\/evil.example",
    "https://evil.example/x",
    "javascript:alert(1)",
    "evil.example",
    " /x",
    "/\n/x",
    "/\r/evil.example",
    "/x\u{7f}",
    "/ /evil.example",
    "/\u{0}x",
];

#[test]
fn redirect_targets_stay_on_this_site() {
    let b = Berth::start();
    let c = no_redirects();
    let lang = |back: &str| {
        c.get(format!("{}/-/lang", b.url))
            .query(&[("to", "zh-CN"), ("back", back)])
            .send()
            .expect("language switch")
    };
    for target in HOSTILE_TARGETS {
        let r = lang(target);
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "back={target:?}");
        assert_eq!(location(&r), "/", "back={target:?}");
    }
    // Local paths, with their queries, are still followed.
    let r = lang("/g/p/container_registry?search=a%20b&sort=desc");
    assert_eq!(
        location(&r),
        "/g/p/container_registry?search=a%20b&sort=desc"
    );

    // After signing in.
    for target in HOSTILE_TARGETS {
        let r = web_sign_in(&b, &c, "root", ROOT_PASSWORD, target);
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "redirect_to={target:?}");
        assert_eq!(location(&r), "/", "redirect_to={target:?}");
    }
    let r = web_sign_in(&b, &c, "root", ROOT_PASSWORD, "/g/p/container_registry");
    assert_eq!(location(&r), "/g/p/container_registry");

    // A signed-in browser on the sign-in page goes straight to the target.
    let session = web_session(&b, &c, "root", ROOT_PASSWORD);
    for target in HOSTILE_TARGETS {
        let r = c
            .get(format!("{}/users/sign_in", b.url))
            .query(&[("redirect_to", target)])
            .header("cookie", format!("berth_session={session}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "redirect_to={target:?}");
        assert_eq!(location(&r), "/", "redirect_to={target:?}");
    }
    // The form does not carry a hostile target along either.
    let r = c
        .get(format!("{}/users/sign_in", b.url))
        .query(&[("redirect_to", "/\t/evil.example")])
        .send()
        .unwrap();
    let page = r.text().unwrap();
    assert!(
        page.contains(r#"name="redirect_to" value="&#x2f;""#),
        "{page}"
    );
}

/// A personal access token for `user` with `scopes`, via the CLI.
fn pat(b: &Berth, user: &str, scopes: &str) -> String {
    b.admin(&[
        "token", "create", "--user", user, "--name", "t", "--scopes", scopes,
    ])
}

fn user_id(b: &Berth, username: &str) -> i64 {
    b.admin(&["user", "list"])
        .lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            let id = f.next()?;
            (f.next()? == username).then(|| id.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no user {username}"))
}

/// Whether the browser holding `session` is still signed in (a signed-in browser is
/// sent on from the sign-in page; anyone else is shown the form).
fn signed_in(b: &Berth, c: &Client, session: &str) -> bool {
    let r = c
        .get(format!("{}/users/sign_in", b.url))
        .header("cookie", format!("berth_session={session}"))
        .send()
        .expect("sign-in page");
    r.status() == StatusCode::SEE_OTHER
}

#[test]
fn password_changes_and_blocks_end_web_sessions() {
    let b = Berth::start();
    let c = no_redirects();
    let root = pat(&b, "root", "api");
    b.user("alice", "alice-password-1");
    b.user("bob", "bob-password-1");
    let alice = user_id(&b, "alice");

    // A password change through the REST API ends every browser of the user, and
    // nobody else's.
    let s1 = web_session(&b, &c, "alice", "alice-password-1");
    let s2 = web_session(&b, &c, "alice", "alice-password-1");
    let bob = web_session(&b, &c, "bob", "bob-password-1");
    assert!(signed_in(&b, &c, &s1) && signed_in(&b, &c, &s2));
    let r = c
        .put(format!("{}/api/v4/users/{alice}", b.url))
        .header("private-token", &root)
        .json(&serde_json::json!({"password": "alice-password-2"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().unwrap());
    assert!(
        !signed_in(&b, &c, &s1),
        "a session survived the password change"
    );
    assert!(
        !signed_in(&b, &c, &s2),
        "a session survived the password change"
    );
    assert!(signed_in(&b, &c, &bob), "another user's session ended");
    // Changing anything else leaves sessions alone.
    let s3 = web_session(&b, &c, "alice", "alice-password-2");
    let r = c
        .put(format!("{}/api/v4/users/{alice}", b.url))
        .header("private-token", &root)
        .json(&serde_json::json!({"name": "Alice A."}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(signed_in(&b, &c, &s3));

    // The same through the command line.
    b.admin_with_stdin(&["user", "set-password", "alice"], "alice-password-3");
    assert!(!signed_in(&b, &c, &s3), "a session survived set-password");

    // Blocking ends them for good: unblocking does not bring them back.
    let s4 = web_session(&b, &c, "alice", "alice-password-3");
    let r = c
        .post(format!("{}/api/v4/users/{alice}/block", b.url))
        .header("private-token", &root)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        !signed_in(&b, &c, &s4),
        "a blocked user's session still works"
    );
    let r = c
        .post(format!("{}/api/v4/users/{alice}/unblock", b.url))
        .header("private-token", &root)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!signed_in(&b, &c, &s4), "unblocking revived an old session");
    let s5 = web_session(&b, &c, "alice", "alice-password-3");
    b.admin(&["user", "block", "alice"]);
    b.admin(&["user", "unblock", "alice"]);
    assert!(
        !signed_in(&b, &c, &s5),
        "a session survived `admin user block`"
    );
}

/// `export K='V'` lines of `berth ci-env` as pairs.
fn ci_var(out: &str, key: &str) -> String {
    out.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim_matches('\'').to_string())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

/// `docker login` as the token service sees it: `/jwt/auth` with basic credentials,
/// from `client` as a trusted proxy forwards it.
fn login_via(b: &Berth, c: &Client, client: &str, user: &str, secret: &str) -> StatusCode {
    c.get(format!("{}/jwt/auth?service=container_registry", b.url))
        .basic_auth(user, Some(secret))
        .header("x-forwarded-for", client)
        .send()
        .expect("token request")
        .status()
}

#[test]
fn sign_in_limits_do_not_lock_out_the_innocent() {
    // The test's own address is the "reverse proxy"; the clients are the addresses
    // it forwards.
    let b = Berth::start_with(&[], &[("BERTH_TRUSTED_PROXIES", "127.0.0.1/32, ::1")]);
    let c = no_redirects();
    b.project("ci/app", "private");
    b.user("alice", "alice-password-1");
    b.user("bob", "bob-password-1");
    let alice_token = pat(&b, "alice", "read_registry");
    let job = b.ci_env(&[
        "--project",
        "ci/app",
        "--user",
        "alice",
        "--registry",
        &b.addr,
    ]);
    let job_token = ci_var(&job, "CI_JOB_TOKEN");
    let login = |client: &str, user: &str, secret: &str| login_via(&b, &c, client, user, secret);

    // Wrong job tokens, many of them, from one address: the shared CI username is
    // never locked, and no runner is shut out.
    for _ in 0..15 {
        assert_eq!(
            login("203.0.113.1", "gitlab-ci-token", "wrong"),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login("203.0.113.2", "gitlab-ci-token", &job_token),
        StatusCode::OK
    );
    assert_eq!(
        login("203.0.113.1", "gitlab-ci-token", &job_token),
        StatusCode::OK
    );

    // Guessing alice's password from one address: that address is stopped...
    for _ in 0..10 {
        assert_eq!(
            login("203.0.113.3", "alice", "guess"),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login("203.0.113.3", "alice", "guess"),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login("203.0.113.3", "bob", "bob-password-1"),
        StatusCode::TOO_MANY_REQUESTS,
        "the guessing address is stopped for everything"
    );
    // ...so are passwords for alice from anywhere...
    assert_eq!(
        login("203.0.113.4", "alice", "guess"),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login("203.0.113.4", "alice", "alice-password-1"),
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but alice's tokens still work, from anywhere else, and so does everyone else.
    assert_eq!(login("203.0.113.4", "alice", &alice_token), StatusCode::OK);
    assert_eq!(
        login("203.0.113.5", "anything", &alice_token),
        StatusCode::OK
    );
    assert_eq!(
        login("203.0.113.4", "bob", "bob-password-1"),
        StatusCode::OK
    );
    assert_eq!(
        login("203.0.113.4", "gitlab-ci-token", &job_token),
        StatusCode::OK
    );

    // The log names the client the proxy forwarded, not the proxy.
    let log = b.log();
    assert!(
        log.lines().any(|l| l.contains("failed sign-in")
            && l.contains("203.0.113.3")
            && l.contains("alice")),
        "no failed sign-in line naming the forwarded client:\n{log}"
    );

    // The web sign-in counts the same way, by the forwarded address.
    let web = |client: &str, user: &str, password: &str| {
        let form = c.get(format!("{}/users/sign_in", b.url)).send().unwrap();
        let csrf = set_cookie(&form, "berth_csrf").unwrap();
        c.post(format!("{}/users/sign_in", b.url))
            .header("cookie", format!("berth_csrf={csrf}"))
            .header("x-forwarded-for", client)
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("username", user),
                ("password", password),
            ])
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(
        web("203.0.113.3", "bob", "bob-password-1"),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        web("203.0.113.6", "alice", "alice-password-1"),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        web("203.0.113.6", "bob", "bob-password-1"),
        StatusCode::SEE_OTHER
    );
    for _ in 0..10 {
        assert_eq!(
            web("203.0.113.7", "nobody", "guess"),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        web("203.0.113.7", "bob", "bob-password-1"),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login("203.0.113.8", "bob", "bob-password-1"),
        StatusCode::OK
    );
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // No trusted proxies (the default): whatever a client claims to forward, its
    // failures count against its own address.
    let b = Berth::start();
    let c = no_redirects();
    b.user("bob", "bob-password-1");
    for i in 0..10 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            login_via(&b, &c, &forged, "nobody", "guess"),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_via(&b, &c, "198.51.100.99", "bob", "bob-password-1"),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For escaped the limit"
    );
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The claims of a JWT.
fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in payload.bytes().take_while(|c| *c != b'=') {
        let v = B64URL.iter().position(|x| *x == c).expect("base64url") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    serde_json::from_slice(&out).expect("JSON claims")
}

/// What a caller learns from one refusal: status, challenge and body, with the
/// requested path written as `<PATH>` (the answer may echo what was asked).
fn answer(r: Response, path: &str) -> String {
    let status = r.status();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.text().unwrap_or_default();
    format!("{status} | {challenge} | {kind} | {body}").replace(path, "<PATH>")
}

/// A registry token from `/jwt/auth` (anonymous without `creds`).
fn registry_token(
    b: &Berth,
    creds: Option<(&str, &str)>,
    path: &str,
) -> (StatusCode, String, serde_json::Value) {
    let r = b.token(creds, &[&format!("repository:{path}:pull,push,delete")]);
    let status = r.status();
    let body: serde_json::Value = r.json().expect("token JSON");
    let token = body["token"].as_str().unwrap_or_default().to_string();
    let keys: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let shape = serde_json::json!({"keys": keys, "access": jwt_claims(&token)["access"]});
    (status, token, shape)
}

#[test]
fn private_and_missing_look_the_same_to_outsiders() {
    let b = Berth::start();
    b.user("outsider", "outsider-password-1");
    b.user("rep", "rep-password-1");
    b.project("sec/private", "private");
    b.project("sec/off", "private");
    b.admin(&[
        "project",
        "update",
        "sec/off",
        "--registry-access",
        "disabled",
    ]);
    for p in ["sec/private", "sec/off"] {
        b.admin(&[
            "member",
            "add",
            "--project",
            p,
            "--user",
            "rep",
            "--role",
            "reporter",
        ]);
    }
    // Existing private, missing (in an existing group and not), disabled registry of
    // a private project, and too deep under a private project.
    let paths = [
        "sec/private",
        "sec/missing",
        "nosuch/group/img",
        "sec/off",
        "sec/private/a/b/c",
    ];
    let requests = |path: &str| {
        [
            (reqwest::Method::GET, format!("/v2/{path}/tags/list")),
            (reqwest::Method::GET, format!("/v2/{path}/manifests/v1")),
            (
                reqwest::Method::HEAD,
                format!("/v2/{path}/blobs/sha256:{}", "0".repeat(64)),
            ),
            (reqwest::Method::POST, format!("/v2/{path}/blobs/uploads/")),
        ]
    };
    let c = no_redirects();
    type Creds<'a> = Option<(&'a str, &'a str)>;
    let callers: [(&str, Creds, bool); 3] = [
        ("no token", None, false),
        ("anonymous token", None, true),
        ("outsider", Some(("outsider", "outsider-password-1")), true),
    ];
    for (who, creds, with_token) in callers {
        let mut seen: Option<(String, Vec<String>, serde_json::Value)> = None;
        for path in paths {
            let (status, token, shape) = registry_token(&b, creds, path);
            let mut answers = Vec::new();
            for (method, url) in requests(path) {
                let mut req = c.request(method.clone(), format!("{}{url}", b.url));
                if with_token {
                    req = req.bearer_auth(&token);
                }
                answers.push(answer(req.send().unwrap(), path));
            }
            let now = (format!("{status}"), answers, shape);
            match &seen {
                None => seen = Some(now),
                Some(first) => assert_eq!(
                    first, &now,
                    "{who}: {path} answers differently from {}",
                    paths[0]
                ),
            }
        }
        let (_, answers, _) = seen.unwrap();
        for a in answers {
            assert!(a.starts_with("401"), "{who}: {a}");
            assert!(!a.contains("sec/"), "{who}: names a project: {a}");
        }
    }

    // Members and administrators, who may see the project, are told why.
    let rep = registry_token(&b, Some(("rep", "rep-password-1")), "sec/off").1;
    let r = c
        .get(format!("{}/v2/sec/off/tags/list", b.url))
        .bearer_auth(&rep)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().unwrap().contains("disabled"));
    let rep = registry_token(&b, Some(("rep", "rep-password-1")), "sec/private/a/b/c").1;
    let r = c
        .get(format!("{}/v2/sec/private/a/b/c/tags/list", b.url))
        .bearer_auth(&rep)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().unwrap().contains("too deep"));
    let root = registry_token(&b, Some(("root", ROOT_PASSWORD)), "nosuch/group/img").1;
    let r = c
        .get(format!("{}/v2/nosuch/group/img/tags/list", b.url))
        .bearer_auth(&root)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().unwrap().contains("no project owns"));
}

/// The first line of the server's log with every one of `needles`, polled for a
/// while (lines are written as requests finish).
fn log_line(b: &Berth, needles: &[&str]) -> String {
    support::eventually(std::time::Duration::from_secs(10), "a log line", || {
        b.log()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(String::from)
    })
}

#[test]
fn refusals_are_logged_with_their_reason() {
    let b = Berth::start();
    let c = no_redirects();
    b.project("sec/private", "private");
    b.user("outsider", "outsider-password-1");
    let outsider_pat = pat(&b, "outsider", "api");

    // Every client's first request, `GET /v2/` with no credentials, is the start
    // of a token exchange, not a refusal to report.
    let r = c.get(format!("{}/v2/", b.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The registry: no token, then a token that does not grant the action.
    let r = c
        .get(format!("{}/v2/sec/private/tags/list", b.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    log_line(
        &b,
        &[
            "refused",
            "pull on repository sec/private",
            "no bearer token",
        ],
    );
    let refusals = b
        .log()
        .lines()
        .filter(|l| l.contains("registry request refused"))
        .count();
    assert_eq!(refusals, 1, "only the repository request is a refusal");
    let (_, token, _) =
        registry_token(&b, Some(("outsider", "outsider-password-1")), "sec/private");
    let r = c
        .get(format!("{}/v2/sec/private/tags/list", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let line = log_line(
        &b,
        &[
            "refused",
            "pull on repository sec/private",
            "does not grant",
        ],
    );
    assert!(line.contains("outsider"), "names the caller: {line}");
    assert!(line.contains("127.0.0.1"), "names the client: {line}");
    // The token service says why it granted less than asked.
    log_line(
        &b,
        &[
            "grants less than asked",
            "repository:sec/private:pull,push,delete",
        ],
    );

    // The REST API: a non-administrator at an administrators' endpoint.
    let r = c
        .put(format!("{}/api/v4/users/1", b.url))
        .header("private-token", &outsider_pat)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let line = log_line(&b, &["API request refused", "needs an administrator"]);
    assert!(line.contains("outsider"), "names the caller: {line}");
    let r = c
        .get(format!("{}/api/v4/user", b.url))
        .header("private-token", "glpat-not-a-real-token")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    log_line(&b, &["API request refused", "unknown, revoked or expired"]);

    // At the default log level (the harness runs `info`), and never a secret.
    let log = b.log();
    for secret in [
        "outsider-password-1",
        outsider_pat.as_str(),
        token.as_str(),
        "glpat-not-a-real-token",
    ] {
        assert!(!log.contains(secret), "the log shows a secret");
    }
}

/// Short limits, so the slow-client tests take seconds.
const FAST_LIMITS: [(&str, &str); 3] = [
    ("BERTH_HEADER_READ_TIMEOUT", "1s"),
    ("BERTH_IDLE_TIMEOUT", "2s"),
    ("BERTH_BODY_TIMEOUT", "1s"),
];

/// A raw connection to the server.
fn raw(b: &Berth) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(&b.addr).expect("connect");
    // Generous: the server's limits are a second or two.
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

/// Read until the server closes the connection; everything it sent. Fails if the
/// connection is still open after the read timeout.
fn read_until_closed(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection is still open ({e}); received so far: {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// One response on a raw connection (headers and a `Content-Length` body).
fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut all = Vec::new();
    let mut buf = [0u8; 1];
    while !all.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut buf).expect("response head"), 1, "closed early");
        all.push(buf[0]);
    }
    let head = String::from_utf8_lossy(&all).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("response body");
    head + &String::from_utf8_lossy(&body)
}

/// A private project `path` (its repository of the same path) with an upload
/// session in it: root's registry token and the session's server-relative path.
fn private_upload(b: &Berth, path: &str) -> (String, String) {
    b.project(path, "private");
    let (_, token, _) = registry_token(b, Some(("root", ROOT_PASSWORD)), path);
    let r = no_redirects()
        .post(format!("{}/v2/{path}/blobs/uploads/", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let upload_path = location(&r).trim_start_matches(&b.url).to_string();
    (token, upload_path)
}

#[test]
fn slow_and_silent_connections_are_closed() {
    use std::io::Write;
    let b = Berth::start_with(&[], &FAST_LIMITS);

    // Connects and sends nothing.
    let mut s = raw(&b);
    assert_eq!(read_until_closed(&mut s), "");

    // Sends half a request head and stops.
    let mut s = raw(&b);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUser-Agent: slow")
        .unwrap();
    read_until_closed(&mut s);

    // A head trickled a byte at a time is still one head that takes too long.
    let mut s = raw(&b);
    let mut closed = false;
    for byte in b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !closed {
        read_until_closed(&mut s);
    }

    // Keep-alive: a request is answered, then the idle connection is closed.
    let mut s = raw(&b);
    s.write_all(b"GET /-/static/berth.css HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    assert_eq!(read_until_closed(&mut s), "");

    // The server is fine for everyone else.
    let r = no_redirects().get(format!("{}/v2/", b.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_stalled_upload_is_cut_and_can_be_resumed() {
    use std::io::Write;
    let b = Berth::start_with(&[], &FAST_LIMITS);
    let (token, upload_path) = private_upload(&b, "up/app");
    let c = no_redirects();

    let blob = support::random_bytes(3000);
    let mut s = raw(&b);
    write!(
        s,
        "PATCH {upload_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    // Part of the body, a few trickled bytes, then nothing.
    s.write_all(&blob[..1000]).unwrap();
    for byte in &blob[1000..1005] {
        s.write_all(&[*byte]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    read_until_closed(&mut s);

    // The upload kept what arrived; the client resumes from its Range.
    let r = c
        .get(format!("{}{upload_path}", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{r:?}");
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let end: usize = range.trim_start_matches("0-").parse().unwrap();
    let have = end + 1;
    assert!(have >= 1000, "the bytes received were kept: Range {range}");
    let r = c
        .patch(format!("{}{upload_path}", b.url))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{have}-{}", blob.len() - 1))
        .body(blob[have..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    let next = location(&r);
    let digest = format!("sha256:{}", support::sha256_hex(&blob));
    let sep = if next.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!(
            "{}{}{sep}digest={digest}",
            b.url,
            next.trim_start_matches(&b.url)
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    let got = c
        .get(format!("{}/v2/up/app/blobs/{digest}", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        got.as_ref() == blob.as_slice(),
        "the resumed blob is intact"
    );
}

/// A body that never falls silent but trickles a byte at a time is cut too: it must
/// average `body_min_rate` over each `body_timeout` span. The upload keeps what came.
#[test]
fn a_trickling_upload_is_cut() {
    use std::io::Write;
    let b = Berth::start_with(&[], &[("BERTH_BODY_TIMEOUT", "2s")]);
    let (token, upload_path) = private_upload(&b, "drip/app");
    let c = no_redirects();
    let mut s = raw(&b);
    write!(
        s,
        "PATCH {upload_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    // A byte every 100 ms, up to 100 of them: never two seconds of silence.
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    read_until_closed(&mut s);
    trickle.join().unwrap();
    let r = c
        .get(format!("{}{upload_path}", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{r:?}");
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let have: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!(
        have < 100,
        "cut while it trickled, with what arrived kept: Range {range}"
    );
    support::eventually(std::time::Duration::from_secs(20), "the log line", || {
        b.log().contains("request body too slow").then_some(())
    });
}

#[test]
fn connections_beyond_the_cap_get_503() {
    use std::io::Write;
    let b = Berth::start_with(&[], &[("BERTH_MAX_CONNECTIONS", "2")]);
    // Two open connections take both places.
    let mut held: Vec<std::net::TcpStream> = (0..2).map(|_| raw(&b)).collect();
    for s in &mut held {
        s.write_all(b"GET /-/static/berth.css HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(s).starts_with("HTTP/1.1 200"));
    }
    let mut s = raw(&b);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut s);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections"), "{answer}");
    // A place comes free when a connection closes.
    drop(held.pop());
    support::eventually(std::time::Duration::from_secs(10), "a free place", || {
        let r = no_redirects().get(format!("{}/v2/", b.url)).send().ok()?;
        (r.status() == StatusCode::UNAUTHORIZED).then_some(())
    });
}

/// The value of header `name` in a raw response, if it has one.
fn raw_header(response: &str, name: &str) -> Option<String> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_ascii_lowercase())
    })
}

/// An upload refused before its body was read (here: no credentials) is answered at
/// once, and the answer says `Connection: close`: the rest of the body is still on
/// its way, so the connection cannot carry another request, and a client that
/// reused it would see its next request fail. An upload whose body was read keeps
/// the connection open.
#[test]
fn an_answer_before_the_body_was_read_closes_the_connection() {
    use std::io::Write;
    let b = Berth::start();
    let (token, upload_path) = private_upload(&b, "early/app");

    let mut s = raw(&b);
    let chunk = support::random_bytes(1000);
    write!(
        s,
        "PATCH {upload_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        chunk.len()
    )
    .unwrap();
    s.write_all(&chunk).unwrap();
    let answer = read_response(&mut s);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_ne!(
        raw_header(&answer, "connection").as_deref(),
        Some("close"),
        "a chunk read whole leaves the connection open: {answer}"
    );

    // The same connection: 8 MiB announced, 64 KiB sent, no credentials.
    write!(
        s,
        "PATCH {upload_path} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    )
    .unwrap();
    s.write_all(&support::random_bytes(64 << 10)).unwrap();
    let answer = read_response(&mut s);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(
        raw_header(&answer, "connection").as_deref(),
        Some("close"),
        "{answer}"
    );
    assert_eq!(read_until_closed(&mut s), "");

    // The upload holds the one chunk.
    let r = no_redirects()
        .get(format!("{}{upload_path}", b.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-999");
}
