//! Core benches: token parsing, chain verification against the bare
//! HMAC-SHA256 floor, full decisions with a signed receipt, the sub-steps
//! of a decision, and the costliest tokens the default limits admit
//! (`worst/*`). See `benches/README.md`.
//!
//! ```text
//! cargo bench -p capnagent-benches --bench core -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(missing_docs)]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::Limits;
use capnagent::{Auditor, Capability, Context, Issuer, Outcome, Predicate, Verifier};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];
const IDENTIFIER: &str = "agent-42";
/// 1 December 2026, inside the caveats' window.
const NOW_MS: u64 = 1_796_083_200_000;

/// The four short caveats of a typical purchase token, all satisfied by
/// [`context`].
const FOUR: [&str; 4] = [
    r#"tool == "checkout.purchase""#,
    r#"caller == "agent:planner""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];

const CHAIN_LENGTHS: [usize; 4] = [1, 4, 16, 64];

/// `n` short (24-33 byte) caveats, cycling through [`FOUR`].
fn predicates(n: usize) -> Vec<&'static str> {
    (0..n).map(|i| FOUR[i % FOUR.len()]).collect()
}

fn token(n: usize) -> Capability {
    let issuer = Issuer::from_key(&ROOT_KEY).expect("32-byte key");
    let mut builder = issuer.issue(IDENTIFIER);
    for p in predicates(n) {
        builder.caveat(p).expect("valid caveat");
    }
    builder.build().expect("at least one caveat")
}

const CONTEXT_JSON: &str = r#"{"nowMs":1796083200000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount_cents":1299,"currency":"EUR","sku":"B00X4WHP5E"}}"#;

fn context() -> Context {
    Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(serde_json::json!({"amount_cents": 1299, "currency": "EUR", "sku": "B00X4WHP5E"}))
        .build()
}

/// The least any verifier must do: N+1 HMAC-SHA256 computations, the first
/// under the root key (its state precomputed once and cloned), each next
/// one keyed by the previous tag, then one comparison.
struct Floor {
    root: HmacSha256,
}

impl Floor {
    fn new() -> Floor {
        Floor {
            root: HmacSha256::new_from_slice(&ROOT_KEY).expect("any key length"),
        }
    }

    fn chain(&self, identifier: &[u8], predicates: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.root.clone();
        mac.update(identifier);
        let mut tag: [u8; 32] = mac.finalize().into_bytes().into();
        for p in predicates {
            let mut mac = HmacSha256::new_from_slice(&tag).expect("any key length");
            mac.update(p);
            tag = mac.finalize().into_bytes().into();
        }
        tag
    }
}

/// The signature field of a token, read from its wire form.
fn signature_hex(cap: &Capability) -> String {
    let bytes = URL_SAFE_NO_PAD
        .decode(cap.serialize())
        .expect("base64url token");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON token");
    json["signature"].as_str().expect("signature").to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bench_parse(c: &mut Criterion) {
    let text = token(4).serialize();
    c.bench_function("token/parse/4", |b| {
        b.iter(|| Capability::parse(black_box(&text)).expect("valid token"))
    });
}

fn bench_chain(c: &mut Criterion) {
    // The chain cache would turn repeated verification of one token into a
    // lookup; measure the HMAC chain itself (and the cached path apart).
    let verifier = Verifier::new(&ROOT_KEY)
        .expect("32-byte key")
        .with_chain_cache(0);
    let cached = Verifier::new(&ROOT_KEY).expect("32-byte key");
    let floor = Floor::new();
    let mut group = c.benchmark_group("chain");
    for n in CHAIN_LENGTHS {
        let cap = token(n);
        group.bench_with_input(BenchmarkId::new("verify", n), &cap, |b, cap| {
            b.iter(|| verifier.verify(black_box(cap)).expect("valid chain"))
        });
        group.bench_with_input(BenchmarkId::new("verify_cached", n), &cap, |b, cap| {
            b.iter(|| cached.verify(black_box(cap)).expect("valid chain"))
        });

        // Same bytes; the floor's tag is the token's signature.
        let preds: Vec<&[u8]> = predicates(n).into_iter().map(str::as_bytes).collect();
        let expected = floor.chain(IDENTIFIER.as_bytes(), &preds);
        assert_eq!(
            signature_hex(&cap),
            hex(&expected),
            "floor computes the real chain"
        );
        group.bench_with_input(BenchmarkId::new("floor", n), &preds, |b, preds| {
            b.iter(|| {
                let tag = floor.chain(black_box(IDENTIFIER.as_bytes()), black_box(preds));
                assert!(tag == expected);
            })
        });
    }
    group.finish();
}

fn bench_decide(c: &mut Criterion) {
    // Default verifier: a token seen before skips the HMAC chain.
    let verifier = Verifier::new(&ROOT_KEY).expect("32-byte key");
    // Every call pays the whole chain (first sight of a token).
    let cold = Verifier::new(&ROOT_KEY)
        .expect("32-byte key")
        .with_chain_cache(0);
    let auditor = Auditor::new(&AUDIT_KEY).expect("32-byte key");
    let cap = token(4);
    let ctx = context();
    // Warm the predicate cache and check the decision once.
    let receipt = verifier
        .verify_with_context(&cap, &ctx, &auditor)
        .expect("valid chain");
    assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
    let from_json = verifier
        .verify_with_context_json(&cap, CONTEXT_JSON, &auditor)
        .expect("valid context");
    assert_eq!(from_json.to_json(), receipt.to_json());

    let mut group = c.benchmark_group("decide");
    group.bench_function("verify_with_context/4", |b| {
        b.iter(|| {
            verifier
                .verify_with_context(black_box(&cap), black_box(&ctx), &auditor)
                .expect("valid chain")
        })
    });
    group.bench_function("verify_with_context/4/uncached_chain", |b| {
        b.iter(|| {
            cold.verify_with_context(black_box(&cap), black_box(&ctx), &auditor)
                .expect("valid chain")
        })
    });
    group.bench_function("verify_with_context_json/4", |b| {
        b.iter(|| {
            verifier
                .verify_with_context_json(black_box(&cap), black_box(CONTEXT_JSON), &auditor)
                .expect("valid chain")
        })
    });
    group.finish();

    c.bench_function("receipt/to_json", |b| {
        b.iter(|| black_box(&receipt).to_json())
    });
}

/// Where the time of `decide/verify_with_context/4` goes.
fn bench_steps(c: &mut Criterion) {
    let verifier = Verifier::new(&ROOT_KEY).expect("32-byte key");
    let auditor = Auditor::new(&AUDIT_KEY).expect("32-byte key");
    let cap = token(4);
    let ctx = context();
    assert!(
        verifier
            .decide(&cap, &ctx)
            .expect("valid chain")
            .is_allowed()
    );
    let parsed: Vec<Predicate> = FOUR
        .iter()
        .map(|p| Predicate::parse(p).expect("valid predicate"))
        .collect();

    let mut group = c.benchmark_group("steps");
    // Chain + caveats (cache lookups and evaluation), no receipt.
    group.bench_function("decide/4", |b| {
        b.iter(|| {
            verifier
                .decide(black_box(&cap), black_box(&ctx))
                .expect("valid chain")
        })
    });
    // Evaluation alone, on already parsed predicates (no cache lookup).
    group.bench_function("eval/4", |b| {
        b.iter(|| {
            for p in &parsed {
                assert_eq!(p.evaluate(black_box(&ctx)), Ok(true));
            }
        })
    });
    // Parsing one short predicate: what a cache miss costs.
    group.bench_function("parse_predicate/1", |b| {
        b.iter(|| Predicate::parse(black_box(FOUR[2])).expect("valid predicate"))
    });
    // The receipt: args hash, summary, HMAC over the canonical body.
    group.bench_function("sign_receipt/4", |b| {
        b.iter(|| {
            auditor.sign(
                black_box(IDENTIFIER),
                cap.caveats().to_vec(),
                black_box(&ctx),
                Outcome::Allowed,
            )
        })
    });
    group.bench_function("args_hash", |b| b.iter(|| black_box(&ctx).args_hash()));
    // What args_hash must do at least: SHA-256 of the canonical text
    // (prebuilt here) and a table-driven hex encoding.
    let canonical = ctx.args().canonical_string();
    group.bench_function("floor/args_sha256", |b| {
        b.iter(|| {
            let digest = <Sha256 as sha2::Digest>::digest(black_box(canonical.as_bytes()));
            hex_table(&digest)
        })
    });
    // Hex of 32 bytes, the way args_hash formats it (`write!("{:02x}")`)
    // and with a lookup table.
    let digest = [0xa5u8; 32];
    group.bench_function("hex32/fmt", |b| b.iter(|| hex_fmt(black_box(&digest))));
    group.bench_function("hex32/table", |b| b.iter(|| hex_table(black_box(&digest))));
    // What signing must do at least: one HMAC-SHA256 (key state
    // precomputed) over a signing body as long as this receipt's.
    let body = receipt_body_like(&auditor, &cap, &ctx);
    let audit_mac = HmacSha256::new_from_slice(&AUDIT_KEY).expect("any key length");
    group.bench_function("floor/receipt_hmac", |b| {
        b.iter(|| {
            let mut mac = audit_mac.clone();
            mac.update(b"v\x01");
            mac.update(black_box(body.as_bytes()));
            let tag: [u8; 32] = mac.finalize().into_bytes().into();
            tag
        })
    });
    group.bench_function("context_from_json", |b| {
        b.iter(|| Context::from_json(black_box(CONTEXT_JSON)).expect("valid context"))
    });
    // A 1 KiB request body, as the HTTP layer sees it.
    let body = kib_body();
    let limits = capnagent::JsonLimits::default();
    group.bench_function("json_parse_1k", |b| {
        b.iter(|| capnagent::JsonValue::parse(black_box(&body), &limits).expect("valid JSON"))
    });
    let parsed = capnagent::JsonValue::parse(&body, &limits).expect("valid JSON");
    group.bench_function("args_hash_1k", |b| {
        b.iter(|| black_box(&parsed).sha256_canonical_hex())
    });
    group.bench_function("canonical_string_1k", |b| {
        b.iter(|| black_box(&parsed).canonical_string())
    });
    group.bench_function("json_doc_1k", |b| {
        b.iter(|| capnagent::Args::from_json(black_box(&body), &limits).expect("valid JSON"))
    });
    let doc = capnagent::Args::from_json(&body, &limits).expect("valid JSON");
    group.bench_function("json_doc_args_hash_1k", |b| {
        b.iter(|| black_box(&doc).sha256_canonical_hex())
    });
    group.bench_function("json_doc_canonical_1k", |b| {
        b.iter(|| black_box(&doc).canonical_string())
    });
    let canonical = doc.canonical_string();
    group.bench_function("sha256_hex_1k", |b| {
        b.iter(|| {
            base16ct::lower::encode_string(&<sha2::Sha256 as sha2::Digest>::digest(
                black_box(&canonical).as_bytes(),
            ))
        })
    });
    group.bench_function("serde_json_value_1k", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&body)).expect("valid"))
    });
    // The HTTP load test's body (`capnagent_examples::load::BODY`): what the
    // tower layer reads, looks up and hashes on every request there.
    let load_body = capnagent_examples::load::BODY;
    group.bench_function("load_body/doc_parse", |b| {
        b.iter(|| capnagent::Args::from_json(black_box(load_body), &limits).expect("valid"))
    });
    let load_doc = capnagent::Args::from_json(load_body, &limits).expect("valid JSON");
    group.bench_function("load_body/doc_args_hash", |b| {
        b.iter(|| black_box(&load_doc).sha256_canonical_hex())
    });
    group.bench_function("load_body/doc_canonical", |b| {
        b.iter(|| black_box(&load_doc).canonical_string())
    });
    group.bench_function("load_body/floor_sha256_hex", |b| {
        b.iter(|| {
            base16ct::lower::encode_string(&<sha2::Sha256 as sha2::Digest>::digest(
                black_box(load_body).as_bytes(),
            ))
        })
    });
    group.finish();
}

/// About 1 KiB of JSON arguments: nested objects, strings, numbers.
fn kib_body() -> String {
    let items: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:05}","name":"item number {i} with a name","qty":{i},"price_cents":{}}}"#,
                i * 137 + 99
            )
        })
        .collect();
    format!(
        r#"{{"amount_cents":1299,"currency":"EUR","merchant":"shop.example","items":[{}]}}"#,
        items.join(",")
    )
}

fn hex_fmt(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn hex_table(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A string as long as the receipt's signing body (its JSON minus the
/// signature field, which is about the same size).
fn receipt_body_like(auditor: &Auditor, cap: &Capability, ctx: &Context) -> String {
    let json = auditor
        .sign(IDENTIFIER, cap.caveats().to_vec(), ctx, Outcome::Allowed)
        .to_json();
    let cut = json.find(",\"signature\"").unwrap_or(json.len());
    format!("{}}}", &json[..cut])
}

/// The costliest tokens the default [`Limits`] admit, judged from their
/// text with every cache cold: `Capability::parse`, the HMAC chain, then
/// every caveat parsed and evaluated (all hold, all unique, so nothing is
/// cached) and the receipt signed. Each shape fills the token to the
/// limits in a different way; the worst of them is the figure the limits
/// are sized by.
fn bench_worst(c: &mut Criterion) {
    let limits = Limits::DEFAULT;
    let auditor = Auditor::new(&AUDIT_KEY).expect("32-byte key");
    let ctx = Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(serde_json::json!({"n": -1, "s": "\u{1}"}))
        .build();
    let mut group = c.benchmark_group("worst");
    for (name, text) in worst_tokens(&limits) {
        let cap = Capability::parse(&text).expect("admitted by the default limits");
        let fresh = || {
            Verifier::new(&ROOT_KEY)
                .expect("32-byte key")
                .with_chain_cache(0)
        };
        let receipt = fresh()
            .verify_with_context(&cap, &ctx, &auditor)
            .expect("valid chain");
        assert!(receipt.is_allowed(), "{name}: {:?}", receipt.outcome());
        let judge = |verifier: &Verifier| {
            let cap = Capability::parse(black_box(&text)).expect("valid token");
            verifier
                .verify_with_context(&cap, black_box(&ctx), &auditor)
                .expect("valid chain")
        };
        group.bench_function(name, |b| {
            b.iter_batched_ref(fresh, |verifier| judge(verifier), BatchSize::SmallInput)
        });
        // The same in CPU time of this thread (the machine is shared, so
        // wall time counts time spent waiting for a core).
        if let Some(cpu) = cpu_per_call(&fresh, &judge) {
            println!(
                "worst/{name}: {:.0} us CPU per judge (median of 5 rounds), token {} bytes, {} caveats",
                cpu / 1_000.0,
                text.len(),
                cap.caveats().len()
            );
        }
    }
    group.finish();
}

/// Median over 5 rounds of the CPU time (ns) this thread spends per
/// `judge` on a fresh verifier; `None` where the kernel does not say
/// (`/proc/thread-self/schedstat`).
fn cpu_per_call<T>(fresh: &dyn Fn() -> Verifier, judge: &dyn Fn(&Verifier) -> T) -> Option<f64> {
    fn thread_cpu_ns() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }
    const CALLS: usize = 100;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let verifiers: Vec<Verifier> = (0..CALLS).map(|_| fresh()).collect();
        let start = thread_cpu_ns()?;
        for verifier in &verifiers {
            black_box(judge(verifier));
        }
        let spent = thread_cpu_ns()?.saturating_sub(start);
        drop(verifiers);
        rounds.push(spent as f64 / CALLS as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds.get(2).copied()
}

/// Serialized tokens as large as `limits` admit, of several shapes, every
/// caveat unique and true in the bench's context.
fn worst_tokens(limits: &Limits) -> Vec<(&'static str, String)> {
    let issuer = Issuer::from_key(&ROOT_KEY)
        .expect("32-byte key")
        .with_limits(*limits);
    // Adds caveats from `next` while the token stays within the limits.
    let fill = |next: &mut dyn FnMut(usize) -> String| {
        let mut builder = issuer.issue(IDENTIFIER);
        let mut last = None;
        for i in 0..limits.max_caveats {
            let predicate = next(i);
            if builder.caveat(&predicate).is_err() {
                break;
            }
            match builder.build() {
                Ok(cap) => last = Some(cap.serialize()),
                Err(_) => break,
            }
        }
        last.expect("at least one caveat fits")
    };
    // One predicate of as many `term AND` as fit in `len` bytes and the
    // term limit, unique through `i`.
    let chain = |i: usize, term: &dyn Fn(usize) -> String, len: usize| {
        let mut p = term(i);
        let mut k = 1;
        while k < limits.max_terms {
            let next = term(i * limits.max_terms + k);
            if p.len() + 5 + next.len() > len {
                break;
            }
            p.push_str(" AND ");
            p.push_str(&next);
            k += 1;
        }
        p
    };
    let max_len = limits.max_predicate_len;
    vec![
        // As many short caveats as allowed.
        ("many_short", fill(&mut |i| format!("arg.n != {i}"))),
        // Long AND chains of short comparisons.
        (
            "long_and_chains",
            fill(&mut |i| chain(i, &|k| format!("arg.n!={k}"), max_len)),
        ),
        // The densest comparisons the grammar allows (`1AND` needs no
        // space), every one evaluated.
        (
            "dense_terms",
            fill(&mut |i| {
                let mut p = format!("arg.n!={i}");
                for _ in 1..limits.max_terms {
                    if p.len() + 12 > max_len {
                        break;
                    }
                    p.push_str("AND arg.n!=1");
                }
                p
            }),
        ),
        // As many caveats as allowed, each as long as the token's length
        // leaves for it: the caveat count and the length bind together.
        (
            "mixed",
            fill(&mut |i| {
                let share = limits.max_token_len * 3 / 4 / limits.max_caveats;
                chain(i, &|k| format!("arg.n!={k}"), share.saturating_sub(16))
            }),
        ),
        // Comparisons in parentheses nested as deep as allowed.
        (
            "deep_groups",
            fill(&mut |i| {
                let depth = limits
                    .max_nesting_depth
                    .min(limits.max_predicate_len / 2 - 16);
                format!("{}arg.n!={i}{}", "(".repeat(depth), ")".repeat(depth))
            }),
        ),
        // Long string literals full of escapes.
        (
            "escaped_strings",
            fill(&mut |i| {
                let body = "\\\"".repeat(max_len.saturating_sub(40) / 4);
                format!("arg.s != \"{i}{body}\"")
            }),
        ),
        // Timestamps, the costliest literal to read.
        (
            "timestamps",
            fill(&mut |i| {
                chain(
                    i,
                    &|k| format!("now>=@1970-01-01T00:00:00.{:09}Z", k % 1_000_000_000),
                    max_len,
                )
            }),
        ),
    ]
}

criterion_group!(
    benches,
    bench_parse,
    bench_chain,
    bench_decide,
    bench_steps,
    bench_worst
);
criterion_main!(benches);
