//! Caveat lints: caveats that do not say what their author meant.
//!
//! [`lint`] checks a capability's caveats, [`lint_predicates`] predicate
//! texts before they are issued. Each [`LintWarning`] has a stable code,
//! the reason and a safer form. Lints never change a decision: the
//! verifier judges every caveat as written.
//!
//! | code | warns on |
//! |---|---|
//! | `unparsable` | a caveat that does not parse (the verifier denies every call) |
//! | `no_caveats` | a token without caveats (denied every call) |
//! | `starts_with_path` | `arg.x starts_with "..."` with a value containing `/`: `"/srv/../etc/passwd"` passes `starts_with "/srv/"` |
//! | `matches_host` | `matches` (a substring test) with a value that looks like a host or URL, or on an identifier named like one (`url`, `host`, `domain`, `origin`): `"api.example.com.evil.test"` passes `matches "api.example.com"` |
//! | `no_lower_bound` | `arg.x <= N` or `arg.x < N` without `arg.x >= M`, `> M` or `== M` (a number) anywhere in the token: negative amounts pass |
//! | `no_expiry` | no caveat, or top-level AND operand of one, is `now <= @...` or `now < @...` |
//! | `expired` | `now <= @T` (or `<`) at top level with `T` in the past ([`LintOptions::now`]) |
//! | `never_holds` | comparisons that cannot all hold: the top-level AND operands of all caveats together, and the direct operands of any AND nested in an OR |
//! | `always_holds` | the direct operands of an OR that hold for every value of one identifier (`arg.x <= 5 OR arg.x > 5`) |
//! | `no_holder_key` | a bearer token when [`LintOptions::proofs_configured`] is set |
//!
//! `never_holds` and `always_holds` reason about one identifier at a time
//! over comparisons with a literal: numbers (`== != < <= > >=` against
//! a number without a unit, as exact decimals), timestamps (`now` against
//! `@...`) and strings (`==` and `!=`; `matches` and `starts_with` are left
//! out). Numbers are taken as dense (decimals): `arg.x > 4 AND arg.x < 5`
//! is not reported although an integer literal admits no integer there.
//! A warning is certain; silence is not a proof. Groups of more than
//! [`MAX_GROUP`] comparisons on one identifier are not checked (the check
//! is quadratic in the group).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use crate::capability::Capability;
use crate::dsl::{self, Comparison, Expr, Ident, Literal, Op, Predicate};
use crate::explain::escape;
use crate::limits::Limits;
use crate::number::Decimal;
use crate::timestamp::Timestamp;

/// Most comparisons on one identifier that `never_holds` and
/// `always_holds` check together.
pub const MAX_GROUP: usize = 512;

/// What the linter knows beyond the caveats.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LintOptions {
    /// The current time, for `expired`; `None` skips that lint.
    pub now: Option<Timestamp>,
    /// The server expects holder-of-key proofs: a bearer token is flagged
    /// (`no_holder_key`).
    pub proofs_configured: bool,
    /// The limits predicates are parsed under.
    pub limits: Limits,
}

impl Default for LintOptions {
    /// No time (no `expired`), no proofs expected, the default limits.
    fn default() -> Self {
        LintOptions {
            now: None,
            proofs_configured: false,
            limits: Limits::DEFAULT,
        }
    }
}

impl LintOptions {
    /// Sets the current time (enables `expired`).
    pub fn now(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }

    /// Sets whether the server expects holder-of-key proofs.
    pub fn proofs_configured(mut self, yes: bool) -> Self {
        self.proofs_configured = yes;
        self
    }
}

/// One lint warning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintWarning {
    /// The stable code (see the [module docs](self)).
    pub code: &'static str,
    /// The caveat it is about, from 0; `None` for the token as a whole.
    pub caveat: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// A safer way to write it.
    pub safer: String,
}

impl fmt::Display for LintWarning {
    /// `warning[CODE]: caveat N: MESSAGE; safer: SAFER` (`token:` for the
    /// token as a whole), control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning[{}]: ", self.code)?;
        match self.caveat {
            Some(i) => write!(f, "caveat {i}: ")?,
            None => f.write_str("token: ")?,
        }
        write!(
            f,
            "{}; safer: {}",
            escape(&self.message),
            escape(&self.safer)
        )
    }
}

/// Lints a capability's caveats (see the [module docs](self)). Needs no
/// key: the chain is not checked.
///
/// ```
/// use capnagent::Issuer;
/// use capnagent::lint::{LintOptions, lint};
///
/// let cap = Issuer::from_key(&[7; 32])?.issue("a").caveat("arg.amount_cents <= 5000")?.build()?;
/// let codes: Vec<_> = lint(&cap, &LintOptions::default()).iter().map(|w| w.code).collect();
/// assert_eq!(codes, ["no_lower_bound", "no_expiry"]);
/// # Ok::<(), capnagent::Error>(())
/// ```
pub fn lint(cap: &Capability, options: &LintOptions) -> Vec<LintWarning> {
    lint_attenuated::<&str>(cap, &[], options)
}

/// Lints `cap` as if `predicates` were appended to it (their caveat
/// numbers follow the token's): what `capnagent lint TOKEN --caveat P`
/// checks before attenuating. A predicate that does not parse is an
/// `unparsable` warning, not an error.
///
/// ```
/// use capnagent::Issuer;
/// use capnagent::lint::{LintOptions, lint_attenuated};
///
/// let cap = Issuer::from_key(&[7; 32])?.issue("a").caveat("arg.x <= 5")?.build()?;
/// let warnings = lint_attenuated(&cap, &["arg.x >= 10"], &LintOptions::default());
/// assert!(warnings.iter().any(|w| w.code == "never_holds" && w.caveat == Some(1)));
/// # Ok::<(), capnagent::Error>(())
/// ```
pub fn lint_attenuated<S: AsRef<str>>(
    cap: &Capability,
    predicates: &[S],
    options: &LintOptions,
) -> Vec<LintWarning> {
    let texts: Vec<&str> = cap
        .caveats()
        .iter()
        .map(|c| c.predicate())
        .chain(predicates.iter().map(AsRef::as_ref))
        .collect();
    let mut out = Vec::new();
    if texts.is_empty() {
        out.push(LintWarning {
            code: "no_caveats",
            caveat: None,
            message: "the token has no caveats: the verifier denies every call".to_owned(),
            safer: "issue it with the caveats that state what it allows".to_owned(),
        });
    }
    if options.proofs_configured && cap.holder_of_key().is_none() {
        out.push(LintWarning {
            code: "no_holder_key",
            caveat: None,
            message: "bearer token (no holder key) while the server expects holder-of-key \
                      proofs: whoever holds the token can use it"
                .to_owned(),
            safer: "bind it to the agent's key (`capnagent issue --holder-key-hex`)".to_owned(),
        });
    }
    out.extend(lint_texts(&texts, options));
    out
}

/// Lints predicate texts as the caveats of one token, before issuing
/// them (caveat numbers are positions in `predicates`, from 0).
///
/// ```
/// use capnagent::lint::{LintOptions, lint_predicates};
///
/// let warnings = lint_predicates(&[r#"arg.path starts_with "/srv/""#], &LintOptions::default());
/// assert_eq!(warnings[0].code, "starts_with_path");
/// ```
pub fn lint_predicates<S: AsRef<str>>(predicates: &[S], options: &LintOptions) -> Vec<LintWarning> {
    let texts: Vec<&str> = predicates.iter().map(AsRef::as_ref).collect();
    lint_texts(&texts, options)
}

fn lint_texts(texts: &[&str], options: &LintOptions) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let mut parsed = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match Predicate::parse_with_limits(text, &options.limits) {
            Ok(p) => parsed.push((i, p)),
            Err(e) => out.push(LintWarning {
                code: "unparsable",
                caveat: Some(i),
                message: format!("does not parse ({e}): the verifier denies every call"),
                safer: "fix the predicate (see docs/caveats.md)".to_owned(),
            }),
        }
    }

    // Every comparison, and the top-level AND operands of each caveat
    // (which all hold together when a call is allowed).
    let mut all: Vec<(usize, &Comparison)> = Vec::new();
    let mut top: Vec<(usize, &Comparison)> = Vec::new();
    let mut ands: Vec<(usize, &[Expr])> = Vec::new();
    let mut ors: Vec<(usize, &[Expr])> = Vec::new();
    for (i, p) in &parsed {
        // (expression, still within the top-level conjunction)
        let mut stack = vec![(p.expr(), true)];
        while let Some((expr, at_top)) = stack.pop() {
            match expr {
                Expr::Cmp(cmp) => {
                    all.push((*i, cmp));
                    if at_top {
                        top.push((*i, cmp));
                    }
                }
                Expr::And(items) => {
                    if !at_top {
                        ands.push((*i, items));
                    }
                    stack.extend(items.iter().rev().map(|e| (e, at_top)));
                }
                Expr::Or(items) => {
                    ors.push((*i, items));
                    stack.extend(items.iter().rev().map(|e| (e, false)));
                }
                // A budget is a whole caveat and compares no fact.
                Expr::Budget(_) => {}
            }
        }
    }

    for (i, cmp) in &all {
        if let Some(w) = starts_with_path(*i, cmp).or_else(|| matches_host(*i, cmp)) {
            out.push(w);
        }
    }
    no_lower_bound(&all, &mut out);
    if !parsed.is_empty() {
        expiry(&top, options, &mut out);
    }
    if let Some(w) = never_holds(&top, None) {
        out.push(w);
    }
    for (i, items) in ands {
        if let Some(w) = never_holds(&direct(items, i), Some(i)) {
            out.push(w);
        }
    }
    for (i, items) in ors {
        if let Some(w) = always_holds(&direct(items, i), i) {
            out.push(w);
        }
    }
    out
}

/// The comparisons among `items` (not those nested deeper).
fn direct(items: &[Expr], i: usize) -> Vec<(usize, &Comparison)> {
    items
        .iter()
        .filter_map(|e| match e {
            Expr::Cmp(cmp) => Some((i, &**cmp)),
            _ => None,
        })
        .collect()
}

/// `ident op literal`, as written.
fn text(cmp: &Comparison) -> String {
    format!(
        "{} {} {}",
        dsl::ident_text(&cmp.ident),
        cmp.op,
        dsl::literal_text(&cmp.literal)
    )
}

fn starts_with_path(i: usize, cmp: &Comparison) -> Option<LintWarning> {
    let (Ident::Arg { dotted, .. }, Op::StartsWith, Literal::Str(value)) =
        (&cmp.ident, cmp.op, &cmp.literal)
    else {
        return None;
    };
    if !value.contains('/') {
        return None;
    }
    let example = format!(
        "{}../etc/passwd",
        value.trim_end_matches('/').to_owned() + "/"
    );
    Some(LintWarning {
        code: "starts_with_path",
        caveat: Some(i),
        message: format!(
            "`{}` is a prefix test on a path-like value: {} passes",
            text(cmp),
            dsl::literal_text(&Literal::Str(example))
        ),
        safer: format!(
            "normalise {dotted} on the caller side (resolve `..`, `.`, `//` and symlinks) before \
             the check, or use an exact match: {dotted} == \"...\""
        ),
    })
}

fn matches_host(i: usize, cmp: &Comparison) -> Option<LintWarning> {
    let (Op::Matches, Literal::Str(value)) = (cmp.op, &cmp.literal) else {
        return None;
    };
    let name = dsl::ident_text(&cmp.ident).to_ascii_lowercase();
    let named = ["url", "host", "domain", "origin"]
        .iter()
        .any(|word| name.contains(word));
    if !named && !looks_like_host_or_url(value) {
        return None;
    }
    let host = host_of(value);
    let evil = dsl::literal_text(&Literal::Str(format!("{value}.evil.test")));
    Some(LintWarning {
        code: "matches_host",
        caveat: Some(i),
        message: format!(
            "`{}`: `matches` is a substring test, so {evil} passes",
            text(cmp)
        ),
        safer: format!(
            "compare the host exactly, with the server extracting it from the URL: \
             arg.host == {}",
            dsl::literal_text(&Literal::Str(host.to_owned()))
        ),
    })
}

/// `https://...`, or `a.b` with a final label of letters (`example.com`).
fn looks_like_host_or_url(value: &str) -> bool {
    if value.contains("://") {
        return true;
    }
    let host = host_of(value);
    let hostish = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let tld = host.rsplit('.').next().unwrap_or_default();
    hostish && host.contains('.') && tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The host part of a URL-like value (`https://h:1/p` -> `h:1`).
fn host_of(value: &str) -> &str {
    let rest = value.split_once("://").map_or(value, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

fn no_lower_bound(all: &[(usize, &Comparison)], out: &mut Vec<LintWarning>) {
    let mut warned: Vec<&str> = Vec::new();
    for (i, cmp) in all {
        let (Ident::Arg { dotted, .. }, Op::Le | Op::Lt, Literal::Num { unit: None, .. }) =
            (&cmp.ident, cmp.op, &cmp.literal)
        else {
            continue;
        };
        if warned.contains(&dotted.as_str()) {
            continue;
        }
        let bounded = all.iter().any(|(_, other)| {
            matches!(
                (&other.ident, other.op, &other.literal),
                (Ident::Arg { dotted: d, .. }, Op::Ge | Op::Gt | Op::Eq, Literal::Num { unit: None, .. })
                    if d == dotted
            )
        });
        if bounded {
            continue;
        }
        warned.push(dotted);
        out.push(LintWarning {
            code: "no_lower_bound",
            caveat: Some(*i),
            message: format!(
                "`{}` bounds {dotted} from above only: negative values pass",
                text(cmp)
            ),
            safer: format!("add a caveat {dotted} >= 0"),
        });
    }
}

fn expiry(top: &[(usize, &Comparison)], options: &LintOptions, out: &mut Vec<LintWarning>) {
    let mut found = false;
    for (i, cmp) in top {
        let (Ident::Now, Op::Le | Op::Lt, Literal::Time(until)) =
            (&cmp.ident, cmp.op, &cmp.literal)
        else {
            continue;
        };
        found = true;
        if let Some(now) = options.now
            && !cmp.op.holds(now.cmp(until))
        {
            out.push(LintWarning {
                code: "expired",
                caveat: Some(*i),
                message: format!(
                    "`{}` is in the past (now {}): the caveat never holds again",
                    text(cmp),
                    now
                ),
                safer: "issue a new token with an expiry in the future".to_owned(),
            });
        }
    }
    if !found {
        out.push(LintWarning {
            code: "no_expiry",
            caveat: None,
            message: "no caveat `now <= @...` (or `now < @...`): the token never expires"
                .to_owned(),
            safer: "add a caveat now <= @YYYY-MM-DDTHH:MM:SSZ (a short lifetime)".to_owned(),
        });
    }
}

/// What one identifier is compared against, by the literal's domain.
enum Bound<'a> {
    Num(Op, &'a Decimal),
    Time(Op, &'a Timestamp),
    Str(Op, &'a str),
}

/// The comparisons of `cmps` the interval reasoning covers, grouped by
/// identifier and domain, in first-seen order.
fn groups<'a>(cmps: &[(usize, &'a Comparison)]) -> Vec<Vec<(usize, &'a Comparison, Bound<'a>)>> {
    let mut index: BTreeMap<(String, u8), usize> = BTreeMap::new();
    let mut out: Vec<Vec<_>> = Vec::new();
    for (i, cmp) in cmps {
        let bound = match (&cmp.literal, cmp.op) {
            (_, Op::Matches | Op::StartsWith) => continue,
            (
                Literal::Num {
                    unit: None, value, ..
                },
                op,
            ) => Bound::Num(op, value),
            (Literal::Time(t), op) => Bound::Time(op, t),
            (Literal::Str(s), op @ (Op::Eq | Op::Ne)) => Bound::Str(op, s),
            _ => continue,
        };
        let domain = match bound {
            Bound::Num(..) => 0,
            Bound::Time(..) => 1,
            Bound::Str(..) => 2,
        };
        let key = (dsl::ident_text(&cmp.ident).to_owned(), domain);
        let slot = *index.entry(key).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        if let Some(group) = out.get_mut(slot) {
            group.push((*i, *cmp, bound));
        }
    }
    out
}

/// A point of the line standing for one region between the constants:
/// below them all, at one, or just above one.
enum Sample<'a, T> {
    Below,
    At(&'a T),
    Above(&'a T),
}

impl<T> Clone for Sample<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Sample<'_, T> {}

fn sample_cmp<T: Ord>(sample: Sample<'_, T>, c: &T) -> Ordering {
    match sample {
        Sample::Below => Ordering::Less,
        Sample::At(b) => b.cmp(c),
        Sample::Above(b) => b.cmp(c).then(Ordering::Greater),
    }
}

/// One sample per region the constants cut the line into.
fn samples<'a, T>(cons: &[(Op, &'a T)]) -> Vec<Sample<'a, T>> {
    let mut out = vec![Sample::Below];
    for &(_, c) in cons {
        out.push(Sample::At(c));
        out.push(Sample::Above(c));
    }
    out
}

/// Some value satisfies every ordered constraint.
fn ordered_satisfiable<T: Ord>(cons: &[(Op, &T)]) -> bool {
    samples(cons)
        .into_iter()
        .any(|s| cons.iter().all(|(op, c)| op.holds(sample_cmp(s, c))))
}

/// Every value satisfies one of the ordered constraints.
fn ordered_covers<T: Ord>(cons: &[(Op, &T)]) -> bool {
    samples(cons)
        .into_iter()
        .all(|s| cons.iter().any(|(op, c)| op.holds(sample_cmp(s, c))))
}

/// String `==`/`!=`: the samples are each literal and one other string.
fn string_samples<'a>(cons: &[(Op, &'a str)]) -> Vec<Option<&'a str>> {
    let mut out = vec![None];
    out.extend(cons.iter().map(|(_, s)| Some(*s)));
    out
}

fn string_holds(op: Op, sample: Option<&str>, literal: &str) -> bool {
    (sample == Some(literal)) == (op == Op::Eq)
}

/// Whether the group's constraints can all hold (`all == true`) or
/// whether one of them always holds (`all == false`).
fn decide(group: &[(usize, &Comparison, Bound<'_>)], all: bool) -> bool {
    let mut nums = Vec::new();
    let mut times = Vec::new();
    let mut strs = Vec::new();
    for (_, _, bound) in group {
        match *bound {
            Bound::Num(op, v) => nums.push((op, v)),
            Bound::Time(op, t) => times.push((op, t)),
            Bound::Str(op, s) => strs.push((op, s)),
        }
    }
    if all {
        ordered_satisfiable(&nums)
            && ordered_satisfiable(&times)
            && string_samples(&strs)
                .into_iter()
                .any(|s| strs.iter().all(|(op, l)| string_holds(*op, s, l)))
    } else {
        (!nums.is_empty() && ordered_covers(&nums))
            || (!times.is_empty() && ordered_covers(&times))
            || (!strs.is_empty()
                && string_samples(&strs)
                    .into_iter()
                    .all(|s| strs.iter().any(|(op, l)| string_holds(*op, s, l))))
    }
}

/// `never_holds` for comparisons that must all hold: the top-level
/// operands of the token's caveats (`within: None`) or one nested AND.
fn never_holds(cmps: &[(usize, &Comparison)], within: Option<usize>) -> Option<LintWarning> {
    for group in groups(cmps) {
        if group.len() < 2 || group.len() > MAX_GROUP || decide(&group, true) {
            continue;
        }
        let joined = group
            .iter()
            .map(|(_, cmp, _)| text(cmp))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut caveats: Vec<usize> = group.iter().map(|(i, _, _)| *i).collect();
        caveats.dedup();
        let last = caveats.last().copied().unwrap_or_default();
        let place = match (within, caveats.as_slice()) {
            (Some(_), _) => "in one AND of this caveat".to_owned(),
            (None, [_]) => "in this caveat".to_owned(),
            (None, many) => format!(
                "across caveats {}",
                many.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Some(LintWarning {
            code: "never_holds",
            caveat: Some(within.unwrap_or(last)),
            message: format!("`{joined}` ({place}) can never hold together"),
            safer: if within.is_some() {
                "fix the bounds; this alternative of the OR allows nothing".to_owned()
            } else {
                "fix the bounds; as written the token allows no call".to_owned()
            },
        });
    }
    None
}

/// `always_holds` for the direct operands of one OR.
fn always_holds(cmps: &[(usize, &Comparison)], i: usize) -> Option<LintWarning> {
    for group in groups(cmps) {
        if group.len() < 2 || group.len() > MAX_GROUP || !decide(&group, false) {
            continue;
        }
        let joined = group
            .iter()
            .map(|(_, cmp, _)| text(cmp))
            .collect::<Vec<_>>()
            .join(" OR ");
        let name = dsl::ident_text(&group[0].1.ident);
        return Some(LintWarning {
            code: "always_holds",
            caveat: Some(i),
            message: format!(
                "`{joined}` holds for every value of {name}: the OR does not restrict it"
            ),
            safer: format!("state the bound on {name} you mean, without the OR"),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(predicates: &[&str]) -> Vec<&'static str> {
        lint_predicates(predicates, &LintOptions::default())
            .into_iter()
            .map(|w| w.code)
            .collect()
    }

    const EXP: &str = "now <= @2027-01-01T00:00:00Z";

    #[test]
    fn clean_caveats_have_no_warning() {
        assert_eq!(
            codes(&[
                r#"tool == "checkout.purchase""#,
                "arg.amount_cents <= 5000 AND arg.amount_cents >= 0",
                r#"arg.path == "/srv/a.txt""#,
                r#"caller starts_with "agent:ops/""#,
                r#"arg.note matches "refund""#,
                EXP,
            ]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn starts_with_on_a_path() {
        let w = lint_predicates(
            &[r#"arg.path starts_with "/srv/""#, EXP],
            &LintOptions::default(),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].code, "starts_with_path");
        assert_eq!(w[0].caveat, Some(0));
        assert!(
            w[0].message.contains(r#""/srv/../etc/passwd" passes"#),
            "{}",
            w[0]
        );
        assert_eq!(
            codes(&[r#"arg.path starts_with "srv""#, EXP]),
            Vec::<&str>::new()
        );
        // Not an argument: a caller prefix is a namespace, not a path.
        assert_eq!(
            codes(&[r#"caller starts_with "agent:ops/""#, EXP]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn matches_on_a_host_or_url() {
        for p in [
            r#"arg.endpoint matches "api.example.com""#,
            r#"arg.endpoint matches "https://api.example.com/v1""#,
            r#"arg.url matches "example""#,
            r#"env.origin matches "x""#,
        ] {
            assert_eq!(codes(&[p, EXP]), ["matches_host"], "{p}");
        }
        let w = lint_predicates(
            &[r#"arg.u matches "https://api.example.com/v1""#],
            &LintOptions::default(),
        );
        assert!(
            w[0].safer.contains(r#"arg.host == "api.example.com""#),
            "{}",
            w[0]
        );
        assert!(w[0].message.contains("evil.test"), "{}", w[0]);
        for p in [
            r#"arg.note matches "refund""#,
            r#"arg.v matches "1.5""#,
            r#"arg.endpoint == "api.example.com""#,
        ] {
            assert_eq!(codes(&[p, EXP]), Vec::<&str>::new(), "{p}");
        }
    }

    #[test]
    fn upper_bound_without_lower_bound() {
        assert_eq!(
            codes(&["arg.amount_cents <= 5000", EXP]),
            ["no_lower_bound"]
        );
        assert_eq!(codes(&["arg.amount_cents < 5000", EXP]), ["no_lower_bound"]);
        // Once per argument.
        assert_eq!(codes(&["arg.a <= 5", "arg.a < 4", EXP]), ["no_lower_bound"]);
        let w = lint_predicates(&["arg.a <= 5"], &LintOptions::default());
        assert_eq!(w[0].safer, "add a caveat arg.a >= 0");
        for bounded in [
            ["arg.a <= 5", "arg.a >= 0"],
            ["arg.a < 5", "arg.a > -1"],
            ["arg.a <= 5", "arg.b >= 0 OR arg.a == 3"],
        ] {
            let mut all = bounded.to_vec();
            all.push(EXP);
            assert_eq!(codes(&all), Vec::<&str>::new(), "{bounded:?}");
        }
        // A lower bound on another argument does not count.
        assert_eq!(
            codes(&["arg.a <= 5", "arg.b >= 0", EXP]),
            ["no_lower_bound"]
        );
    }

    #[test]
    fn expiry() {
        assert_eq!(codes(&[r#"tool == "t""#]), ["no_expiry"]);
        assert_eq!(
            codes(&[r#"tool == "t""#, "now < @2027-01-01T00:00:00Z"]),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes(&[r#"tool == "t" AND now <= @2027-01-01T00:00:00Z"#]),
            Vec::<&str>::new()
        );
        // Inside an OR it is no expiry; a start time is none either.
        assert_eq!(
            codes(&[r#"tool == "t" OR now <= @2027-01-01T00:00:00Z"#]),
            ["no_expiry"]
        );
        assert_eq!(codes(&["now >= @2027-01-01T00:00:00Z"]), ["no_expiry"]);
        let now = Timestamp::from_unix_millis(1_800_000_000_000); // 2027-01-15
        let options = LintOptions::default().now(now);
        let w = lint_predicates(&["now <= @2027-01-01T00:00:00Z"], &options);
        assert_eq!(w.iter().map(|w| w.code).collect::<Vec<_>>(), ["expired"]);
        let w = lint_predicates(&["now <= @2028-01-01T00:00:00Z"], &options);
        assert!(w.is_empty(), "{w:?}");
        // Without a time, no `expired`.
        assert_eq!(codes(&["now <= @2001-01-01T00:00:00Z"]), Vec::<&str>::new());
    }

    #[test]
    fn never_holds() {
        for set in [
            &["arg.x <= 5 AND arg.x >= 10"][..],
            &["arg.x <= 5", "arg.x >= 10"],
            &["arg.x < 5 AND arg.x >= 5"],
            &["arg.x == 3", "arg.x != 3"],
            &[r#"tool == "a" AND tool == "b""#],
            &[r#"tool == "a""#, r#"tool != "a""#],
            &["now <= @2026-01-01T00:00:00Z AND now >= @2027-01-01T00:00:00Z"],
        ] {
            let mut all = set.to_vec();
            all.push(EXP);
            all.push("arg.x >= -100");
            let got = codes(&all);
            assert!(got.contains(&"never_holds"), "{set:?}: {got:?}");
        }
        let w = lint_predicates(&["arg.x <= 5", "arg.x >= 10"], &LintOptions::default());
        let never = w
            .iter()
            .find(|w| w.code == "never_holds")
            .expect("never_holds");
        assert_eq!(never.caveat, Some(1));
        assert!(never.message.contains("across caveats 0, 1"), "{never}");
        // Nested in an OR: the alternative never holds.
        let got = codes(&[
            r#"(arg.x <= 5 AND arg.x >= 10) OR tool == "a""#,
            "arg.x >= 0",
            EXP,
        ]);
        assert_eq!(got, ["never_holds"]);
        for fine in [
            &["arg.x <= 5 AND arg.x >= 5"][..],
            &["arg.x <= 10", "arg.x >= 5"],
            &[r#"tool == "a" AND tool != "b""#],
            &[r#"tool == "a" OR tool == "b""#],
            // OR operands are not a conjunction.
            &["arg.x <= 5 OR arg.x >= 10"],
            // Different domains are not compared.
            &[r#"arg.x == "a" AND arg.x >= 10"#],
        ] {
            let mut all = fine.to_vec();
            all.push(EXP);
            all.push("arg.x >= -100");
            let got = codes(&all);
            assert!(!got.contains(&"never_holds"), "{fine:?}: {got:?}");
        }
    }

    #[test]
    fn always_holds() {
        for p in [
            "arg.x <= 5 OR arg.x > 5",
            "arg.x < 5 OR arg.x >= 5",
            "arg.x != 5 OR arg.x == 5",
            "arg.x >= 10 OR arg.x <= 20",
            r#"tool == "a" OR tool != "a""#,
            r#"tool != "a" OR tool != "b""#,
        ] {
            let got = codes(&[p, "arg.x >= 0", EXP]);
            assert!(got.contains(&"always_holds"), "{p}: {got:?}");
        }
        for p in [
            "arg.x < 5 OR arg.x > 5",
            "arg.x <= 5 OR arg.x >= 10",
            r#"tool == "a" OR tool == "b""#,
            "arg.x <= 5 OR arg.y > 5",
        ] {
            let got = codes(&[p, "arg.x >= 0", "arg.y >= 0", EXP]);
            assert!(!got.contains(&"always_holds"), "{p}: {got:?}");
        }
    }

    #[test]
    fn unparsable_and_token_level() {
        assert_eq!(codes(&["arg.x <=", EXP]), ["unparsable"]);
        let key = [7u8; 32];
        let bearer = crate::Issuer::from_key(&key)
            .and_then(|i| i.issue("a").caveat(EXP)?.build())
            .expect("token");
        let proofs = LintOptions::default().proofs_configured(true);
        let w: Vec<_> = lint(&bearer, &proofs).into_iter().map(|w| w.code).collect();
        assert_eq!(w, ["no_holder_key"]);
        assert!(lint(&bearer, &LintOptions::default()).is_empty());
        let holder = crate::HolderKey::from_seed([3; 32]);
        let bound = crate::Issuer::from_key(&key)
            .and_then(|i| {
                i.issue("a")
                    .holder_of_key(holder.public_key())?
                    .caveat(EXP)?
                    .build()
            })
            .expect("token");
        assert!(lint(&bound, &proofs).is_empty());
    }

    #[test]
    fn display_is_one_line_with_code_and_safer_form() {
        let w = lint_predicates(&["arg.a <= 5"], &LintOptions::default());
        assert_eq!(
            w[0].to_string(),
            "warning[no_lower_bound]: caveat 0: `arg.a <= 5` bounds arg.a from above only: \
             negative values pass; safer: add a caveat arg.a >= 0"
        );
        assert_eq!(
            w[1].to_string(),
            "warning[no_expiry]: token: no caveat `now <= @...` (or `now < @...`): the token \
             never expires; safer: add a caveat now <= @YYYY-MM-DDTHH:MM:SSZ (a short lifetime)"
        );
        let w = lint_predicates(
            &["tool == \"a\nb\" AND tool == \"c\""],
            &LintOptions::default(),
        );
        assert!(w.iter().all(|w| !w.to_string().contains('\n')), "{w:?}");
    }
}
