//! Fuzz properties of every parser here that reads client input: digests, repository
//! names, tags and manifests. Each property runs `BERTH_FUZZ_CASES` generated inputs
//! (256 by default; `scripts/fuzz` raises it), mixing near-valid structured inputs
//! with arbitrary text and bytes. Properties: no panic, valid inputs round-trip, the
//! parser agrees with the spec's grammar, invalid inputs give the documented error.

use std::cell::Cell;
use std::sync::LazyLock;

use berth_oci::manifest::{self, ManifestError, MAX_MANIFEST_BYTES};
use berth_oci::{media, Algorithm, Digest, DigestError, ManifestKind, NameError, RepoName, Tag};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use regex::Regex;

fn cases() -> u32 {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Run one property and report how many cases it ran; a failure names the minimal
/// input proptest shrank it to.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    check_n(name, cases(), strategy, test)
}

/// As [`check`], with its own number of cases (for properties whose inputs are
/// megabytes).
fn check_n<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let ran = Cell::new(0u64);
    let result = TestRunner::new(config).run(&strategy, |v| {
        ran.set(ran.get() + 1);
        test(v)
    });
    eprintln!("fuzz {name}: {} cases", ran.get());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!("{name}: {why}; minimal input: {input:?}"),
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

// ---- digests ----------------------------------------------------------------------

/// The OCI image spec's digest grammar, with the encodings it registers for sha256
/// and sha512 (descriptor.md, "Digests").
static OCI_DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\z").unwrap());
static REGISTERED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\z").unwrap());

fn hex_of(len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(b"0123456789abcdef".to_vec()),
            1 => prop::sample::select(b"ABCDEFgz:-_=+ /\x00".to_vec()),
        ],
        len.saturating_sub(2)..len + 2,
    )
    .prop_map(|b| String::from_utf8(b).unwrap())
}

fn digest_text() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        4 => Just("sha256"),
        3 => Just("sha512"),
        1 => prop::sample::select(vec!["SHA256", "sha384", "md5", "", "sha256+b64", "sha-256", " sha256"]),
    ];
    prop_oneof![
        6 => (alg, prop_oneof![hex_of(64), hex_of(128)]).prop_map(|(a, h)| format!("{a}:{h}")),
        1 => any::<String>(),
        1 => "[a-z0-9:+._=-]{0,140}",
        1 => (any::<[u8; 32]>(), any::<bool>()).prop_map(|(b, big)| {
            let d = if big { Digest::of(Algorithm::Sha512, &b) } else { Digest::of(Algorithm::Sha256, &b) };
            d.to_string()
        }),
    ]
}

#[test]
fn fuzz_digest_agrees_with_the_spec_grammar() {
    check("digest grammar", digest_text(), |s| {
        let s = s.as_str();
        let parsed = Digest::parse(s);
        prop_assert_eq!(
            parsed.is_ok(),
            REGISTERED.is_match(s),
            "{:?} -> {:?}",
            s,
            parsed
        );
        match parsed {
            Ok(d) => {
                // Round trip through text and serde.
                prop_assert!(OCI_DIGEST.is_match(s));
                prop_assert_eq!(d.as_str(), s);
                prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d.clone());
                let json = serde_json::to_string(&d).unwrap();
                prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d.clone());
                prop_assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s);
            }
            Err(DigestError::Malformed(t)) => {
                prop_assert!(!s.contains(':'));
                prop_assert_eq!(t, s);
            }
            Err(DigestError::UnsupportedAlgorithm(a)) => {
                let (alg, _) = s.split_once(':').unwrap();
                prop_assert_eq!(a.as_str(), alg);
                prop_assert!(alg != "sha256" && alg != "sha512");
            }
            Err(DigestError::BadHex(t)) => {
                let (alg, _) = s.split_once(':').unwrap();
                prop_assert!(alg == "sha256" || alg == "sha512");
                prop_assert_eq!(t, s);
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
        // serde refuses exactly what parse refuses.
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(
            serde_json::from_str::<Digest>(&json).is_ok(),
            REGISTERED.is_match(s)
        );
        Ok(())
    });
}

#[test]
fn fuzz_hash_state_restore_never_panics() {
    let states = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (0usize..2000, any::<u8>(), any::<bool>()).prop_map(|(n, b, big)| {
            let alg = if big {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            let mut h = berth_oci::Hasher::new(alg);
            h.update(&vec![b; n]);
            h.save()
        }),
    ];
    check("hash state", (states, any::<bool>()), |(state, big)| {
        let alg = if big {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        };
        if let Ok(h) = berth_oci::Hasher::restore(alg, &state) {
            prop_assert_eq!(h.algorithm(), alg);
            let _ = h.finish();
        }
        Ok(())
    });
}

// ---- repository names and tags ----------------------------------------------------------

/// distribution's `reference` grammar for a repository path (without a domain).
static DISTRIBUTION_NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    Regex::new(&format!(r"\A{component}(?:/{component})*\z")).unwrap()
});
/// distribution's tag grammar (Go's `\w` is ASCII).
static DISTRIBUTION_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\z").unwrap());

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9]{1,8}([._-]{1,2}[a-z0-9]{1,6}){0,2}",
        2 => "[a-zA-Z0-9._ /-]{0,10}",
        1 => "_[a-z]{1,5}",
        1 => "[a-z]{1,5}[-_.]",
        1 => "[a-z]{1,3}(__|--|---|\\.\\.|_\\.)[a-z]{1,3}",
        1 => "\\PC{0,4}",
    ]
}

fn repo_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(segment(), 1..6).prop_map(|s| s.join("/")),
        1 => prop::collection::vec("[a-z0-9]{20,40}", 6..10).prop_map(|s| s.join("/")),
        1 => any::<String>(),
    ]
}

#[test]
fn fuzz_repository_names_agree_with_distribution() {
    check("repository name", repo_text(), |s| {
        let parsed = RepoName::parse(&s);
        let reference = DISTRIBUTION_NAME.is_match(&s) && s.len() <= berth_oci::name::MAX_NAME_LEN;
        prop_assert_eq!(parsed.is_ok(), reference, "{:?} -> {:?}", s, parsed);
        match parsed {
            Ok(n) => {
                prop_assert_eq!(n.as_str(), s.as_str());
                prop_assert_eq!(RepoName::parse(&n.to_string()).unwrap(), n.clone());
                prop_assert_eq!(n.segments().collect::<Vec<_>>().join("/"), s);
            }
            Err(NameError::Empty) => prop_assert!(s.is_empty()),
            Err(NameError::TooLong(n)) => {
                prop_assert_eq!(n, s.len());
                prop_assert!(n > berth_oci::name::MAX_NAME_LEN);
            }
            Err(NameError::BadSegment {
                name,
                segment,
                reason,
            }) => {
                // The refusal names a segment of this name that breaks the grammar.
                prop_assert_eq!(name, s.clone());
                prop_assert!(s.split('/').any(|x| x == segment));
                prop_assert!(!DISTRIBUTION_NAME.is_match(&segment));
                prop_assert!(!reason.is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
        Ok(())
    });
}

#[test]
fn fuzz_tags_agree_with_distribution() {
    let tags = prop_oneof![
        6 => "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,130}",
        2 => "[a-zA-Z0-9._:/@ -]{0,12}",
        1 => any::<String>(),
    ];
    check("tag", tags, |s| {
        let parsed = Tag::parse(&s);
        prop_assert_eq!(parsed.is_ok(), DISTRIBUTION_TAG.is_match(&s));
        match parsed {
            Ok(t) => prop_assert_eq!(Tag::parse(&t.to_string()).unwrap(), t),
            Err(NameError::BadTag(t)) => prop_assert_eq!(t, s),
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
        Ok(())
    });
}

// ---- manifests ------------------------------------------------------------------------

fn valid_digest() -> impl Strategy<Value = Digest> {
    (any::<u64>(), any::<bool>()).prop_map(|(n, big)| {
        let alg = if big {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        };
        Digest::of(alg, &n.to_le_bytes())
    })
}

fn descriptor_json() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::sample::select(vec![
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.config.v1+json",
            "application/x.anything",
        ]),
        valid_digest(),
        0i64..i64::MAX,
        prop::option::of(prop::collection::btree_map(
            "[a-z.]{1,8}",
            "\\PC{0,8}",
            0..3,
        )),
        prop::option::of(("[a-z0-9]{1,6}", "[a-z]{1,6}", prop::option::of("v[0-9]"))),
        prop::option::of(prop::collection::vec(
            "https?://[a-z]{1,8}/[a-z]{0,5}",
            0..2,
        )),
    )
        .prop_map(|(mt, d, size, ann, plat, urls)| {
            let mut v = serde_json::json!({"mediaType": mt, "digest": d, "size": size});
            if let Some(a) = ann {
                v["annotations"] = serde_json::json!(a);
            }
            if let Some((arch, os, variant)) = plat {
                v["platform"] = serde_json::json!({"architecture": arch, "os": os});
                if let Some(var) = variant {
                    v["platform"]["variant"] = serde_json::json!(var);
                }
            }
            if let Some(u) = urls {
                v["urls"] = serde_json::json!(u);
            }
            v
        })
}

/// A valid manifest of one of the accepted media types, as JSON, with how it says it
/// is typed in the Content-Type header.
#[derive(Debug, Clone)]
struct Valid {
    body: serde_json::Value,
    header: Option<String>,
    media_type: &'static str,
}

fn valid_manifest() -> impl Strategy<Value = Valid> {
    (
        prop::sample::select(media::MANIFEST_TYPES.to_vec()),
        descriptor_json(),
        prop::collection::vec(descriptor_json(), 0..40),
        any::<bool>(),
        0u8..3,
        prop::option::of(descriptor_json()),
        prop::option::of("application/x\\.[a-z]{1,8}"),
    )
        .prop_map(
            |(mt, config, list, body_type, header_kind, subject, artifact)| {
                let index = media::is_index(mt);
                let mut body = serde_json::json!({"schemaVersion": 2});
                if body_type {
                    body["mediaType"] = serde_json::json!(mt);
                }
                if index {
                    body["manifests"] = serde_json::json!(list);
                } else {
                    body["config"] = config;
                    body["layers"] = serde_json::json!(list);
                }
                if let Some(s) = subject.filter(|_| mt != media::DOCKER_MANIFEST_LIST) {
                    body["subject"] = s;
                }
                if let Some(a) = artifact {
                    body["artifactType"] = serde_json::json!(a);
                }
                // Without a type in the body or the header, a body is taken as OCI.
                let header = match header_kind {
                    0 if body_type || mt == media::OCI_MANIFEST || mt == media::OCI_INDEX => None,
                    1 if body_type || mt == media::OCI_MANIFEST || mt == media::OCI_INDEX => {
                        Some("application/json".to_string())
                    }
                    _ => Some(format!("{mt}; charset=utf-8")),
                };
                Valid {
                    body,
                    header,
                    media_type: mt,
                }
            },
        )
}

#[test]
fn fuzz_valid_manifests_parse_and_round_trip() {
    check("valid manifest", valid_manifest(), |v| {
        let bytes = serde_json::to_vec(&v.body).unwrap();
        let m = manifest::parse(v.header.as_deref(), &bytes)
            .map_err(|e| TestCaseError::fail(format!("{e} for {}", v.body)))?;
        prop_assert_eq!(m.media_type.as_str(), v.media_type);
        let index = media::is_index(v.media_type);
        prop_assert_eq!(
            m.kind,
            if index {
                ManifestKind::Index
            } else {
                ManifestKind::Image
            }
        );
        let listed = if index { &m.children } else { &m.layers };
        let key = if index { "manifests" } else { "layers" };
        // Parse → serialise → parse gives the same descriptors.
        let again: Vec<berth_oci::Descriptor> =
            serde_json::from_value(serde_json::to_value(listed).unwrap()).unwrap();
        prop_assert_eq!(&again, listed);
        let sent: Vec<berth_oci::Descriptor> = serde_json::from_value(v.body[key].clone()).unwrap();
        prop_assert_eq!(&sent, listed);
        if !index {
            let mut rebuilt = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": m.media_type,
                "config": m.config,
                "layers": m.layers,
            });
            if let Some(a) = &m.artifact_type {
                rebuilt["artifactType"] = serde_json::json!(a);
            }
            let m2 = manifest::parse(None, &serde_json::to_vec(&rebuilt).unwrap()).unwrap();
            prop_assert_eq!(m2.config, m.config);
            prop_assert_eq!(m2.layers, m.layers);
        }
        Ok(())
    });
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,10}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 10] = [
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "subject",
    "annotations",
    "artifactType",
    "fsLayers",
    "size",
];

/// A valid manifest with some fields replaced by values of the wrong type (or
/// removed), or the same at one level down inside a descriptor.
fn broken_manifest() -> impl Strategy<Value = (Option<String>, Vec<u8>)> {
    (
        valid_manifest(),
        prop::collection::vec(
            (
                prop::sample::select(FIELDS.to_vec()),
                prop::option::of(any_json()),
                any::<bool>(),
            ),
            1..4,
        ),
        0usize..200,
    )
        .prop_map(|(v, edits, cut)| {
            let mut body = v.body;
            for (field, value, nested) in edits {
                let target = if nested {
                    let list = if body.get("layers").is_some() {
                        "layers"
                    } else {
                        "manifests"
                    };
                    match body.get_mut(list) {
                        Some(serde_json::Value::Array(a)) if !a.is_empty() => &mut a[0],
                        _ => &mut body,
                    }
                } else {
                    &mut body
                };
                if let serde_json::Value::Object(o) = target {
                    match value {
                        Some(x) => o.insert(field.to_string(), x),
                        None => o.remove(field),
                    };
                }
            }
            let mut bytes = serde_json::to_vec(&body).unwrap();
            // Sometimes also cut it short.
            if cut < 20 {
                bytes.truncate(bytes.len() * cut / 20);
            }
            (v.header, bytes)
        })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            media::OCI_MANIFEST,
            media::OCI_INDEX,
            media::DOCKER_MANIFEST_V2,
            media::DOCKER_MANIFEST_LIST,
            media::DOCKER_SCHEMA1,
            media::DOCKER_SCHEMA1_SIGNED,
            "application/json",
            "application/vnd.oci.image.config.v1+json",
            "",
            ";",
        ])
        .prop_map(String::from),
        any::<String>(),
    ])
}

/// Every error a manifest parse may answer is one of the documented ones, and a
/// valid result is self-consistent.
fn consistent(
    result: Result<berth_oci::Manifest, ManifestError>,
    len: usize,
) -> Result<(), TestCaseError> {
    match result {
        Ok(m) => {
            prop_assert!(media::MANIFEST_TYPES.contains(&m.media_type.as_str()));
            match m.kind {
                ManifestKind::Index => {
                    prop_assert!(media::is_index(&m.media_type));
                    prop_assert!(m.config.is_none() && m.layers.is_empty());
                }
                ManifestKind::Image => {
                    prop_assert!(!media::is_index(&m.media_type));
                    prop_assert!(m.children.is_empty());
                    let config = m.config.as_ref().unwrap();
                    prop_assert!(config.size >= 0 && m.layers.iter().all(|l| l.size >= 0));
                }
            }
        }
        Err(ManifestError::TooLarge(n)) => {
            prop_assert_eq!(n, len);
            prop_assert!(n > MAX_MANIFEST_BYTES)
        }
        Err(ManifestError::SchemaVersion(v)) => prop_assert!(v != 1 && v != 2),
        Err(_) => {}
    }
    Ok(())
}

#[test]
fn fuzz_broken_manifests_are_refused_cleanly() {
    check("broken manifest", broken_manifest(), |(header, bytes)| {
        consistent(manifest::parse(header.as_deref(), &bytes), bytes.len())
    });
}

#[test]
fn fuzz_arbitrary_manifest_bytes() {
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        any::<String>().prop_map(String::into_bytes),
    ];
    check(
        "manifest bytes",
        (content_type(), bodies),
        |(header, bytes)| consistent(manifest::parse(header.as_deref(), &bytes), bytes.len()),
    );
}

#[test]
fn fuzz_deep_and_huge_manifests() {
    // Deep nesting anywhere (a known field, an unknown one, annotations), huge arrays
    // near and past the size limit, and huge strings.
    let shapes = (0u8..6, 1usize..200_000, any::<bool>());
    let heavy = (cases() / 100).clamp(32, 2000);
    check_n(
        "deep and huge manifest",
        heavy,
        shapes,
        |(shape, n, open)| {
            let nest = |n: usize| {
                let (a, b) = if open { ("[", "]") } else { ("{\"a\":", "}") };
                format!("{}1{}", a.repeat(n), b.repeat(n))
            };
            let layer = r#"{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}"#;
            let body = match shape {
                0 => format!(r#"{{"schemaVersion":2,"x":{}}}"#, nest(n)),
                1 => format!(r#"{{"schemaVersion":2,"fsLayers":{}}}"#, nest(n)),
                2 => format!(
                    r#"{{"schemaVersion":2,"config":{layer},"layers":[{}]}}"#,
                    nest(n)
                ),
                3 => format!(
                    r#"{{"schemaVersion":2,"config":{layer},"layers":[{}]}}"#,
                    vec![layer; n.min(40_000)].join(",")
                ),
                4 => format!(
                    r#"{{"schemaVersion":2,"annotations":{{"k":"{}"}}}}"#,
                    "x".repeat(n * 30)
                ),
                _ => format!(
                    r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                    vec!["{}"; n].join(",")
                ),
            };
            let result = manifest::parse(None, body.as_bytes());
            if shape == 3 {
                // 40,000 layers are 4.4 MB: over the limit; fewer parse.
                match &result {
                    Ok(m) => prop_assert_eq!(m.layers.len(), n.min(40_000)),
                    Err(e) => prop_assert_eq!(e, &ManifestError::TooLarge(body.len())),
                }
            }
            consistent(result, body.len())
        },
    );
}

// ---- regressions found by the properties above ----------------------------------------
