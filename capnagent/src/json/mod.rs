//! JSON: the crate's one value model ([`JsonValue`], [`JsonNumber`],
//! [`JsonObject`]), its reader, the string escaper, and the one canonical
//! writer (sorted keys, no whitespace, last duplicate wins) behind
//! `args_hash`. The signed formats of fixed shape (the capability's wire
//! form, the receipt, the revocation list, the proof challenge) are
//! written field by field in their modules, their strings through the
//! same escaper.
//!
//! The reader is our own because the reference's behaviour forces it:
//! `args_hash` hashes every number as its exact source text (`1.50` stays
//! `1.50`, a 40-digit integer stays whole), repeated keys must be kept
//! until the canonical writer drops all but the last, and what is accepted
//! or refused must be exactly what `serde_json` with `arbitrary_precision`
//! accepts, with `serde_json`'s error wording and positions. `serde_json`'s
//! own value type drops repeated keys, and keeps number text only with its
//! `arbitrary_precision` feature, which would change number handling for
//! every crate in the same build. The reader runs on attacker-controlled
//! text: it never panics, never converts numbers to floating point, and
//! uses an explicit stack instead of recursion, so nesting is bounded only
//! by [`JsonLimits`].
//!
//! The reader writes a flat tape (`doc::JsonDoc`: the source text plus
//! eight bytes per value); [`JsonValue`] is built from the tape when a tree
//! is asked for, and a tree built by code becomes a tape (through its
//! compact text) before it is written canonically. The canonical writer
//! works on the tape only: it copies untouched source text in whole runs,
//! which is what makes `args_hash` of a request body cheap.

/// The largest nesting depth the parser will ever allow, whatever
/// [`JsonLimits::max_depth`] says. Dropping, comparing and converting a
/// [`JsonValue`] recurse over its depth, so this keeps those operations far
/// away from the thread stack limit.
const MAX_SUPPORTED_DEPTH: usize = 512;

mod doc;

pub(crate) use doc::{JsonDoc, JsonRef};
use doc::{Node, NodeKind};

/// A parsed JSON value.
///
/// Numbers keep their exact source text (see [`JsonNumber`]) and objects keep
/// their members in source order, duplicates included (see [`JsonObject`]).
/// Equality is structural and textual: `1.0` and `1.00` are different values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonValue {
    /// The literal `null`.
    Null,
    /// The literal `true` or `false`.
    Bool(bool),
    /// A number, kept as its validated source text.
    Number(JsonNumber),
    /// A string, holding the decoded (unescaped) text.
    String(String),
    /// An array, in source order.
    Array(Vec<JsonValue>),
    /// An object, in source order with duplicate keys kept.
    Object(JsonObject),
}

impl JsonValue {
    /// The JSON kind of this value: `"null"`, `"bool"`, `"number"`,
    /// `"string"`, `"array"` or `"object"`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "bool",
            JsonValue::Number(_) => "number",
            JsonValue::String(_) => "string",
            JsonValue::Array(_) => "array",
            JsonValue::Object(_) => "object",
        }
    }

    /// The decoded text if this value is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object if this value is an object.
    pub fn as_object(&self) -> Option<&JsonObject> {
        match self {
            JsonValue::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Parses one JSON document from `text` under `limits`.
    ///
    /// Accepts and rejects exactly what
    /// `serde_json::from_str::<serde_json::Value>` (with
    /// `arbitrary_precision`) does, except that numbers keep their source
    /// text, duplicate keys are kept, and the depth and length limits apply.
    ///
    /// ```
    /// use capnagent::{JsonLimits, JsonValue};
    ///
    /// let v = JsonValue::parse(r#"{"b": 1.50, "a": [true, null]}"#, &JsonLimits::default())?;
    /// assert_eq!(v.canonical_string(), r#"{"a":[true,null],"b":1.50}"#);
    /// # Ok::<(), capnagent::JsonError>(())
    /// ```
    pub fn parse(text: &str, limits: &JsonLimits) -> Result<JsonValue, JsonError> {
        parse(text, limits)
    }

    /// Parses one JSON document from raw bytes, which must be valid UTF-8
    /// (anywhere in the input, not only inside strings). See
    /// [`parse`](Self::parse).
    pub fn parse_bytes(bytes: &[u8], limits: &JsonLimits) -> Result<JsonValue, JsonError> {
        parse_bytes(bytes, limits)
    }

    /// The canonical JSON text: no whitespace, object keys sorted by their
    /// UTF-8 bytes (the last of repeated keys wins, written once), strings
    /// escaped like `serde_json`, numbers as their text except that the
    /// integer `-0` is written `0`. What [`Args::canonical_string`]
    /// writes for the same value.
    ///
    /// [`Args::canonical_string`]: crate::Args::canonical_string
    ///
    /// A value whose JSON text exceeds 512 MiB (more than the writer's
    /// index holds; no request body gets there under [`JsonLimits`]) is
    /// written as its compact text instead, keys in their given order.
    pub fn canonical_string(&self) -> String {
        match JsonDoc::from_value(self) {
            Ok(doc) => doc.canonical_string(),
            Err(_) => compact_string(self),
        }
    }

    /// Lowercase hex SHA-256 of [`canonical_string`](Self::canonical_string):
    /// the `args_hash` a receipt carries for these arguments.
    pub fn sha256_canonical_hex(&self) -> String {
        match JsonDoc::from_value(self) {
            Ok(doc) => doc.sha256_canonical_hex(),
            Err(_) => crate::crypto::hex_encode(&<sha2::Sha256 as sha2::Digest>::digest(
                compact_string(self).as_bytes(),
            )),
        }
    }
}

/// A JSON number, stored as its exact, validated source text
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
///
/// The text is never converted to floating point, so `1.50`, `1E+2`, `1e400`
/// and 40-digit integers are all kept verbatim. Equality is textual.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonNumber(Box<str>);

impl JsonNumber {
    /// The exact source text of the number.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the text is written as an integer, i.e. contains none of
    /// `.`, `e`, `E`. (`1e3` is not integer syntax even though its value is
    /// integral.)
    pub fn is_integer_syntax(&self) -> bool {
        JsonNumber::is_integer_text(&self.0)
    }

    /// [`is_integer_syntax`](Self::is_integer_syntax) for a number's text.
    pub fn is_integer_text(text: &str) -> bool {
        !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }

    /// Validates `text` against the JSON number grammar (the whole text, no
    /// surrounding whitespace) and wraps it, or returns `None`.
    pub fn parse(text: &str) -> Option<JsonNumber> {
        match scan_number(text.as_bytes(), 0) {
            Ok(end) if end == text.len() => Some(JsonNumber(text.into())),
            _ => None,
        }
    }
}

/// A JSON object: members in source order, duplicate keys kept.
///
/// Lookups follow `serde_json` semantics (the last occurrence of a key wins);
/// callers that must reject duplicates can detect them with [`JsonObject::iter`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonObject(Vec<(String, JsonValue)>);

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject(Vec::new())
    }

    /// The value of the last member named `key`, if any.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// All members in source order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &JsonValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of members, duplicates included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends a member (an existing member with the same key is kept; the new
    /// one shadows it for [`JsonObject::get`]).
    pub fn insert(&mut self, k: String, v: JsonValue) {
        self.0.push((k, v));
    }
}

/// Resource limits applied when JSON is read ([`JsonValue::parse`],
/// [`Args::from_json`](crate::Args::from_json)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Maximum number of nested containers (arrays and objects), counting the
    /// outermost one. The default, 127, matches `serde_json`'s recursion
    /// limit: 127 nested arrays parse and 128 fail. Values above 512 are
    /// clamped to 512, because dropping, comparing or converting a parsed
    /// value recurses over its depth.
    pub max_depth: usize,
    /// Maximum input length in bytes; longer input is rejected before
    /// parsing. Values above 512 MiB are clamped to it (the parser keeps
    /// offsets as 29-bit numbers).
    pub max_len: usize,
}

impl Default for JsonLimits {
    /// `max_depth: 127`, `max_len: 1 MiB`.
    fn default() -> Self {
        JsonLimits {
            max_depth: 127,
            max_len: 1 << 20,
        }
    }
}

/// A JSON syntax error (or limit violation) with the position where it was
/// detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line} column {column}")]
pub struct JsonError {
    /// What went wrong, worded like `serde_json`'s messages.
    pub message: String,
    /// 1-based line number.
    pub line: usize,
    /// Byte column within the line, computed like `serde_json` (1-based for
    /// an offending byte, 0 for an error at the very start of a line).
    pub column: usize,
}

/// [`JsonValue::parse`].
pub(crate) fn parse(text: &str, limits: &JsonLimits) -> Result<JsonValue, JsonError> {
    let nodes = parse_tape(text, limits)?;
    Ok(value_from_tape(text, &nodes))
}

/// [`JsonValue::parse_bytes`].
pub(crate) fn parse_bytes(bytes: &[u8], limits: &JsonLimits) -> Result<JsonValue, JsonError> {
    parse(utf8(bytes, limits)?, limits)
}

/// `bytes` as text, after the length check.
fn utf8<'a>(bytes: &'a [u8], limits: &JsonLimits) -> Result<&'a str, JsonError> {
    check_len(bytes.len(), limits)?;
    // SIMD validation first (several times faster on a request body); the
    // standard library's, for the error position, only when it fails.
    if let Ok(text) = simdutf8::basic::from_utf8(bytes) {
        return Ok(text);
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = position_of_index(bytes, e.valid_up_to().saturating_add(1));
        JsonError {
            message: "invalid UTF-8 in input".to_owned(),
            line,
            column,
        }
    })
}

/// Checks the length and parses `text` into its tape.
fn parse_tape(text: &str, limits: &JsonLimits) -> Result<Vec<Node>, JsonError> {
    check_len(text.len(), limits)?;
    Parser::new(text, limits).parse_document()
}

/// Refuses a text longer than a tape can index, whatever the limits.
fn check_tape_len(len: usize) -> Result<(), JsonError> {
    check_len(
        len,
        &JsonLimits {
            max_depth: usize::MAX,
            max_len: usize::MAX,
        },
    )
}

/// The decoded text of the string node `node` of a tape over `text`.
fn decode_string(text: &str, node: &Node) -> String {
    let (start, end) = node.span();
    let raw = text.get(start..end).unwrap_or_default();
    if !node.escaped() {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: start,
        max_depth: 0,
        nodes: Vec::new(),
    };
    // The tape was built by validating this very string, so decoding it
    // again cannot fail.
    let _ = parser.parse_string(Some(&mut out));
    out
}

/// Builds the [`JsonValue`] of a tape. The tape is walked from its end, so
/// every container finds its children, in reverse order, on top of one
/// value stack: no recursion.
fn value_from_tape(text: &str, nodes: &[Node]) -> JsonValue {
    let mut values: Vec<JsonValue> = Vec::new();
    for node in nodes.iter().rev() {
        let value = match node.kind() {
            NodeKind::Null => JsonValue::Null,
            NodeKind::True => JsonValue::Bool(true),
            NodeKind::False => JsonValue::Bool(false),
            NodeKind::Number => {
                let (start, end) = node.span();
                JsonValue::Number(JsonNumber(text.get(start..end).unwrap_or("0").into()))
            }
            NodeKind::String => JsonValue::String(decode_string(text, node)),
            NodeKind::Array => {
                let first = values.len().saturating_sub(node.a() as usize);
                JsonValue::Array(values.drain(first..).rev().collect())
            }
            NodeKind::Object => {
                let first = values.len().saturating_sub(2 * node.a() as usize);
                let mut members = Vec::with_capacity(node.a() as usize);
                let mut taken = values.drain(first..).rev();
                while let (Some(key), Some(value)) = (taken.next(), taken.next()) {
                    let key = match key {
                        JsonValue::String(key) => key,
                        _ => String::new(),
                    };
                    members.push((key, value));
                }
                drop(taken);
                JsonValue::Object(JsonObject(members))
            }
        };
        values.push(value);
    }
    values.pop().unwrap_or(JsonValue::Null)
}

fn check_len(len: usize, limits: &JsonLimits) -> Result<(), JsonError> {
    if len > limits.max_len.min(MAX_SUPPORTED_LEN) {
        return Err(JsonError {
            message: format!(
                "input is {len} bytes, exceeding the limit of {} bytes",
                limits.max_len.min(MAX_SUPPORTED_LEN)
            ),
            line: 1,
            column: 0,
        });
    }
    Ok(())
}

/// Parse error kinds, with `serde_json`'s wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorCode {
    EofWhileParsingList,
    EofWhileParsingObject,
    EofWhileParsingString,
    EofWhileParsingValue,
    ExpectedColon,
    ExpectedListCommaOrEnd,
    ExpectedObjectCommaOrEnd,
    ExpectedSomeIdent,
    ExpectedSomeValue,
    InvalidEscape,
    InvalidNumber,
    InvalidUnicodeCodePoint,
    ControlCharacterWhileParsingString,
    KeyMustBeAString,
    LoneLeadingSurrogateInHexEscape,
    LoneTrailingSurrogateInHexEscape,
    TrailingComma,
    TrailingCharacters,
    UnexpectedEndOfHexEscape,
    RecursionLimitExceeded,
}

impl ErrorCode {
    fn message(self) -> &'static str {
        match self {
            ErrorCode::EofWhileParsingList => "EOF while parsing a list",
            ErrorCode::EofWhileParsingObject => "EOF while parsing an object",
            ErrorCode::EofWhileParsingString => "EOF while parsing a string",
            ErrorCode::EofWhileParsingValue => "EOF while parsing a value",
            ErrorCode::ExpectedColon => "expected `:`",
            ErrorCode::ExpectedListCommaOrEnd => "expected `,` or `]`",
            ErrorCode::ExpectedObjectCommaOrEnd => "expected `,` or `}`",
            ErrorCode::ExpectedSomeIdent => "expected ident",
            ErrorCode::ExpectedSomeValue => "expected value",
            ErrorCode::InvalidEscape => "invalid escape",
            ErrorCode::InvalidNumber => "invalid number",
            ErrorCode::InvalidUnicodeCodePoint => "invalid unicode code point",
            ErrorCode::ControlCharacterWhileParsingString => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            ErrorCode::KeyMustBeAString => "key must be a string",
            ErrorCode::LoneLeadingSurrogateInHexEscape => "lone leading surrogate in hex escape",
            ErrorCode::LoneTrailingSurrogateInHexEscape => "lone trailing surrogate in hex escape",
            ErrorCode::TrailingComma => "trailing comma",
            ErrorCode::TrailingCharacters => "trailing characters",
            ErrorCode::UnexpectedEndOfHexEscape => "unexpected end of hex escape",
            ErrorCode::RecursionLimitExceeded => "recursion limit exceeded",
        }
    }
}

/// `serde_json`'s position of byte index `i`: 1-based line, and the number of
/// bytes between the start of that line and `i`.
fn position_of_index(bytes: &[u8], i: usize) -> (usize, usize) {
    let i = i.min(bytes.len());
    let before = bytes.get(..i).unwrap_or(bytes);
    let start_of_line = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line = 1 + before
        .iter()
        .take(start_of_line)
        .filter(|&&b| b == b'\n')
        .count();
    (line, i - start_of_line)
}

/// Scans a JSON number starting at `start` and returns the index just past
/// it. On failure returns the error and the byte index whose position
/// `serde_json` would report.
fn scan_number(bytes: &[u8], start: usize) -> Result<usize, (ErrorCode, usize)> {
    let len = bytes.len();
    let peek_index = |p: usize| len.min(p.saturating_add(1));
    let is_digit = |p: usize| matches!(bytes.get(p), Some(b'0'..=b'9'));
    let mut p = start;
    if bytes.get(p) == Some(&b'-') {
        p += 1;
    }
    match bytes.get(p) {
        None => return Err((ErrorCode::EofWhileParsingValue, p)),
        Some(b'0') => {
            p += 1;
            if is_digit(p) {
                return Err((ErrorCode::InvalidNumber, peek_index(p)));
            }
        }
        Some(b'1'..=b'9') => {
            p += 1;
            while is_digit(p) {
                p += 1;
            }
        }
        Some(_) => return Err((ErrorCode::InvalidNumber, p + 1)),
    }
    if bytes.get(p) == Some(&b'.') {
        p += 1;
        let digits_start = p;
        while is_digit(p) {
            p += 1;
        }
        if p == digits_start {
            let code = if p < len {
                ErrorCode::InvalidNumber
            } else {
                ErrorCode::EofWhileParsingValue
            };
            return Err((code, peek_index(p)));
        }
    }
    if matches!(bytes.get(p), Some(b'e' | b'E')) {
        p += 1;
        if matches!(bytes.get(p), Some(b'+' | b'-')) {
            p += 1;
        }
        match bytes.get(p) {
            None => return Err((ErrorCode::EofWhileParsingValue, p)),
            Some(b'0'..=b'9') => p += 1,
            Some(_) => return Err((ErrorCode::InvalidNumber, p + 1)),
        }
        while is_digit(p) {
            p += 1;
        }
    }
    Ok(p)
}

fn hex_value(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// The parser state. `pos` mirrors `serde_json`'s read index so that error
/// positions match: `err` reports the position of `pos` (after consuming the
/// offending byte), `peek_err` the position of the byte at `pos`.
///
/// The parser writes a flat tape of [`Node`]s in document order (see
/// [`JsonDoc`]); [`parse`] builds a [`JsonValue`] from that tape.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
    nodes: Vec<Node>,
}

/// Byte offsets and node indexes are 29-bit numbers on the tape, so no
/// document may be longer than this (512 MiB), whatever
/// [`JsonLimits::max_len`] says.
const MAX_SUPPORTED_LEN: usize = doc::NODE_MAX as usize - 1;

/// `usize` to the tape's `u32`; [`MAX_SUPPORTED_LEN`] keeps every offset
/// and index in range.
fn tape_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, limits: &JsonLimits) -> Parser<'a> {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            max_depth: limits.max_depth.min(MAX_SUPPORTED_DEPTH),
            // Machine-written JSON has about one value per 8-16 bytes.
            nodes: Vec::with_capacity(text.len() / 12 + 4),
        }
    }

    fn error_at(&self, code: ErrorCode, index: usize) -> JsonError {
        let (line, column) = position_of_index(self.bytes, index);
        JsonError {
            message: code.message().to_owned(),
            line,
            column,
        }
    }

    fn err(&self, code: ErrorCode) -> JsonError {
        self.error_at(code, self.pos)
    }

    fn peek_err(&self, code: ErrorCode) -> JsonError {
        self.error_at(code, self.pos.saturating_add(1))
    }

    /// Skips whitespace and returns the next byte without consuming it.
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\t' | b'\r' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    fn check_depth(&self, open: usize) -> Result<(), JsonError> {
        if open >= self.max_depth {
            return Err(self.peek_err(ErrorCode::RecursionLimitExceeded));
        }
        Ok(())
    }

    fn push(&mut self, kind: NodeKind, a: usize, b: usize) {
        self.nodes
            .push(Node::new(kind, false, tape_u32(a), tape_u32(b)));
    }

    /// Closes the container at `index` with `count` children (members for
    /// an object); its subtree ends at the current end of the tape.
    fn close(&mut self, index: usize, count: u32) {
        let end = tape_u32(self.nodes.len());
        if let Some(node) = self.nodes.get_mut(index) {
            node.close(count, end);
        }
    }

    /// Parses the whole input into the tape.
    fn parse_document(mut self) -> Result<Vec<Node>, JsonError> {
        // Open containers: tape index and children so far.
        let mut stack: Vec<(usize, u32)> = Vec::new();
        'value: loop {
            // Parse the start of one value; containers that are not empty are
            // pushed on the stack and their first element parsed next.
            match self.skip_ws() {
                None => return Err(self.peek_err(ErrorCode::EofWhileParsingValue)),
                Some(open @ (b'[' | b'{')) => {
                    self.check_depth(stack.len())?;
                    self.pos += 1;
                    let index = self.nodes.len();
                    let is_array = open == b'[';
                    let kind = if is_array {
                        NodeKind::Array
                    } else {
                        NodeKind::Object
                    };
                    self.push(kind, 0, index + 1);
                    match (is_array, self.skip_ws()) {
                        (true, Some(b']')) | (false, Some(b'}')) => self.pos += 1,
                        (true, Some(_)) => {
                            stack.push((index, 0));
                            continue 'value;
                        }
                        (true, None) => return Err(self.peek_err(ErrorCode::EofWhileParsingList)),
                        (false, Some(b'"')) => {
                            self.parse_key()?;
                            stack.push((index, 0));
                            continue 'value;
                        }
                        (false, Some(_)) => {
                            return Err(self.peek_err(ErrorCode::KeyMustBeAString));
                        }
                        (false, None) => {
                            return Err(self.peek_err(ErrorCode::EofWhileParsingObject));
                        }
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.parse_string_node()?;
                }
                Some(b'n') => {
                    self.pos += 1;
                    self.parse_ident(b"ull")?;
                    self.push(NodeKind::Null, 0, 0);
                }
                Some(b't') => {
                    self.pos += 1;
                    self.parse_ident(b"rue")?;
                    self.push(NodeKind::True, 0, 0);
                }
                Some(b'f') => {
                    self.pos += 1;
                    self.parse_ident(b"alse")?;
                    self.push(NodeKind::False, 0, 0);
                }
                Some(b'-' | b'0'..=b'9') => {
                    let start = self.pos;
                    match scan_number(self.bytes, start) {
                        Ok(end) => {
                            self.pos = end;
                            self.push(NodeKind::Number, start, end);
                        }
                        Err((code, index)) => return Err(self.error_at(code, index)),
                    }
                }
                Some(_) => return Err(self.peek_err(ErrorCode::ExpectedSomeValue)),
            }

            // A value is complete: count it in the innermost open container,
            // closing containers for as long as their closing bracket follows.
            loop {
                let Some((index, count)) = stack.last_mut() else {
                    if self.skip_ws().is_some() {
                        return Err(self.peek_err(ErrorCode::TrailingCharacters));
                    }
                    return Ok(self.nodes);
                };
                *count += 1;
                let (index, count) = (*index, *count);
                let is_array = self.nodes.get(index).map(|n| n.kind()) == Some(NodeKind::Array);
                match self.skip_ws() {
                    Some(b',') => {
                        self.pos += 1;
                        match (is_array, self.skip_ws()) {
                            (true, Some(b']')) | (false, Some(b'}')) => {
                                return Err(self.peek_err(ErrorCode::TrailingComma));
                            }
                            (true, Some(_)) => continue 'value,
                            (false, Some(b'"')) => {
                                self.parse_key()?;
                                continue 'value;
                            }
                            (false, Some(_)) => {
                                return Err(self.peek_err(ErrorCode::KeyMustBeAString));
                            }
                            (_, None) => {
                                return Err(self.peek_err(ErrorCode::EofWhileParsingValue));
                            }
                        }
                    }
                    Some(b']') if is_array => {
                        self.pos += 1;
                        self.close(index, count);
                        stack.pop();
                    }
                    Some(b'}') if !is_array => {
                        self.pos += 1;
                        self.close(index, count);
                        stack.pop();
                    }
                    Some(_) if is_array => {
                        return Err(self.peek_err(ErrorCode::ExpectedListCommaOrEnd));
                    }
                    Some(_) => return Err(self.peek_err(ErrorCode::ExpectedObjectCommaOrEnd)),
                    None if is_array => return Err(self.peek_err(ErrorCode::EofWhileParsingList)),
                    None => return Err(self.peek_err(ErrorCode::EofWhileParsingObject)),
                }
            }
        }
    }

    /// Parses `"key"` onto the tape and the following `:`; `pos` is at the
    /// opening quote.
    #[inline(always)]
    fn parse_key(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        self.parse_string_node()?;
        match self.skip_ws() {
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.peek_err(ErrorCode::ExpectedColon)),
            None => Err(self.peek_err(ErrorCode::EofWhileParsingObject)),
        }
    }

    /// Validates a string (`pos` just past its opening quote) and puts its
    /// raw contents, between the quotes, on the tape.
    #[inline(always)]
    fn parse_string_node(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        // Most keys and many values are short and plain: when the first
        // special byte of the next 16 is the closing quote, that is the
        // whole string.
        if let Some(end) = self.short_plain_string(start) {
            self.pos = end + 1;
            self.nodes.push(Node::new(
                NodeKind::String,
                false,
                tape_u32(start),
                tape_u32(end),
            ));
            return Ok(());
        }
        self.parse_long_string_node(start)
    }

    /// [`parse_string_node`](Self::parse_string_node) for a string that is
    /// longer, or has an escape or a control character: out of line, so
    /// that the short case inlined into the parser's loop stays small.
    #[inline(never)]
    fn parse_long_string_node(&mut self, start: usize) -> Result<(), JsonError> {
        let escaped = self.parse_string(None)?;
        self.nodes.push(Node::new(
            NodeKind::String,
            escaped,
            tape_u32(start),
            tape_u32(self.pos - 1),
        ));
        Ok(())
    }

    /// The index of the closing quote of a string starting at `start` (just
    /// past its opening quote), when it is among the next 16 bytes with no
    /// backslash or control character before it.
    #[inline]
    fn short_plain_string(&self, start: usize) -> Option<usize> {
        for offset in [0, 8] {
            if let Some(i) = first_special(word_at(self.bytes, start + offset)?) {
                let at = start + offset + i;
                return (self.bytes.get(at) == Some(&b'"')).then_some(at);
            }
        }
        None
    }

    /// Parses the rest of a literal whose first byte was consumed.
    fn parse_ident(&mut self, rest: &[u8]) -> Result<(), JsonError> {
        self.expect_bytes(
            rest,
            ErrorCode::EofWhileParsingValue,
            ErrorCode::ExpectedSomeIdent,
        )
    }

    /// Consumes `expected` byte by byte: `at_end` if the input stops
    /// first, `mismatch` (just past the wrong byte) if a byte differs.
    fn expect_bytes(
        &mut self,
        expected: &[u8],
        at_end: ErrorCode,
        mismatch: ErrorCode,
    ) -> Result<(), JsonError> {
        for &want in expected {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.err(at_end));
            };
            self.pos += 1;
            if b != want {
                return Err(self.err(mismatch));
            }
        }
        Ok(())
    }

    /// Moves `pos` to the next byte that ends a plain run inside a string:
    /// `"`, `\\`, a control character, or the end of the input.
    fn skip_plain(&mut self) {
        // Eight bytes at a time.
        let mut words = 0;
        while let Some(word) = word_at(self.bytes, self.pos) {
            if let Some(i) = first_special(word) {
                self.pos += i;
                return;
            }
            self.pos += 8;
            words += 1;
            if words == 4 {
                break;
            }
        }
        if words == 4 {
            // A long run: find the next quote or backslash (SIMD), then
            // check the run before it for control characters with a loop
            // that has no early exit, so that it vectorizes.
            let rest = self.bytes.get(self.pos..).unwrap_or_default();
            let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
            let plain = rest.get(..run).unwrap_or_default();
            let control = plain.iter().fold(false, |seen, &b| seen | (b < 0x20));
            self.pos += if control {
                plain.iter().position(|&b| b < 0x20).unwrap_or(run)
            } else {
                run
            };
            return;
        }
        // The last few bytes of the input.
        while let Some(&b) = self.bytes.get(self.pos) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    /// Parses string contents; `pos` is just past the opening quote and
    /// ends just past the closing one. Appends the decoded text to `out`
    /// when given; returns whether the string contained an escape.
    fn parse_string(&mut self, mut out: Option<&mut String>) -> Result<bool, JsonError> {
        let mut start = self.pos;
        let mut escaped = false;
        let mut scratch = String::new();
        loop {
            self.skip_plain();
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.err(ErrorCode::EofWhileParsingString));
            };
            if let Some(out) = out.as_deref_mut() {
                // `start` and `pos` sit on ASCII bytes (or the end of a run
                // that ends at one), so this slice is on char boundaries.
                match self.text.get(start..self.pos) {
                    Some(run) => out.push_str(run),
                    None => return Err(self.err(ErrorCode::InvalidUnicodeCodePoint)),
                }
            }
            self.pos += 1;
            match b {
                b'"' => return Ok(escaped),
                b'\\' => {
                    escaped = true;
                    match out.as_deref_mut() {
                        Some(out) => self.parse_escape(out)?,
                        None => {
                            scratch.clear();
                            self.parse_escape(&mut scratch)?;
                        }
                    }
                    start = self.pos;
                }
                _ => return Err(self.err(ErrorCode::ControlCharacterWhileParsingString)),
            }
        }
    }

    /// Parses one escape; `pos` is just past the backslash.
    fn parse_escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(&c) = self.bytes.get(self.pos) else {
            return Err(self.err(ErrorCode::EofWhileParsingString));
        };
        self.pos += 1;
        let decoded = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.parse_unicode_escape(out),
            _ => return Err(self.err(ErrorCode::InvalidEscape)),
        };
        out.push(decoded);
        Ok(())
    }

    /// Parses the four hex digits after `\u`.
    fn decode_hex_escape(&mut self) -> Result<u16, JsonError> {
        let digits = self.bytes.get(self.pos..self.pos.saturating_add(4));
        let Some(&[a, b, c, d]) = digits else {
            self.pos = self.bytes.len();
            return Err(self.err(ErrorCode::EofWhileParsingString));
        };
        self.pos += 4;
        match (hex_value(a), hex_value(b), hex_value(c), hex_value(d)) {
            (Some(a), Some(b), Some(c), Some(d)) => Ok((a << 12) | (b << 8) | (c << 4) | d),
            _ => Err(self.err(ErrorCode::InvalidEscape)),
        }
    }

    /// Parses a `\uXXXX` escape (and its low surrogate if it is a high
    /// surrogate); `pos` is just past the `u`.
    fn parse_unicode_escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let n = self.decode_hex_escape()?;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(self.err(ErrorCode::LoneTrailingSurrogateInHexEscape));
        }
        let code_point = if (0xD800..=0xDBFF).contains(&n) {
            self.expect_bytes(
                b"\\u",
                ErrorCode::EofWhileParsingString,
                ErrorCode::UnexpectedEndOfHexEscape,
            )?;
            let n2 = self.decode_hex_escape()?;
            if !(0xDC00..=0xDFFF).contains(&n2) {
                return Err(self.err(ErrorCode::LoneLeadingSurrogateInHexEscape));
            }
            ((u32::from(n - 0xD800) << 10) | u32::from(n2 - 0xDC00)) + 0x1_0000
        } else {
            u32::from(n)
        };
        match char::from_u32(code_point) {
            Some(ch) => {
                out.push(ch);
                Ok(())
            }
            None => Err(self.err(ErrorCode::InvalidUnicodeCodePoint)),
        }
    }
}

/// Output sink so JSON can be written into a `String` or straight into a
/// hasher or MAC without allocating.
pub(crate) trait JsonSink {
    /// Appends `s` to the output.
    fn put(&mut self, s: &str);
}

impl JsonSink for String {
    #[inline]
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl JsonSink for Vec<u8> {
    #[inline]
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Receipts and proofs stream their signing input into a MAC or hash
/// through a stack buffer.
impl<U: sha2::digest::Update> JsonSink for crate::crypto::Buffered<U> {
    fn put(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

impl JsonSink for sha2::Sha256 {
    fn put(&mut self, s: &str) {
        sha2::Digest::update(self, s.as_bytes());
    }
}

/// Appends `s` to `out` as a quoted JSON string, escaped exactly as
/// `serde_json` escapes it and as every signed format of this crate does:
/// `"` and `\` are backslash-escaped, control characters use
/// `\b \f \n \r \t` or lowercase `\u00xx`, everything else (including
/// `/`, U+007F and all non-ASCII) is written as it is. For adapters that
/// write JSON responses (JSON-RPC, problem+json) by hand.
///
/// ```
/// let mut out = String::from("{\"reason\":");
/// capnagent::write_json_string(&mut out, "say \"hi\"\n");
/// out.push('}');
/// assert_eq!(out, r#"{"reason":"say \"hi\"\n"}"#);
/// ```
pub fn write_json_string(out: &mut String, s: &str) {
    write_escaped_str(out, s);
}

/// Escapes for the control characters U+0000..=U+001F, as `serde_json`
/// writes them (short forms where JSON has one, lowercase `\u00xx` otherwise).
const CONTROL_ESCAPES: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// Writes `s` as a quoted JSON string, escaped exactly like `serde_json`:
/// `"` and `\` are backslash-escaped, control characters use `\b \f \n \r \t`
/// or lowercase `\u00xx`, and everything else (including `/`, U+007F and all
/// non-ASCII) is written raw.
pub(crate) fn write_escaped_str<S: JsonSink + ?Sized>(out: &mut S, s: &str) {
    out.put("\"");
    let bytes = s.as_bytes();
    if is_plain(bytes) {
        // Names, tools, hashes: nothing to escape, one piece.
        out.put(s);
        out.put("\"");
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight plain bytes at a time.
        if let Some(word) = word_at(bytes, i)
            && first_special(word).is_none()
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x00..=0x1F => CONTROL_ESCAPES[usize::from(b)],
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` indexes an ASCII byte and `start` follows one (or is 0), so the
        // run is on char boundaries.
        if start < i {
            out.put(&s[start..i]);
        }
        out.put(escape);
        i += 1;
        start = i;
    }
    if start < s.len() {
        out.put(&s[start..]);
    }
    out.put("\"");
}

/// Whether `bytes` holds no `"`, `\\` or control character, checked a word
/// at a time: the last word overlaps the one before it, and text shorter
/// than a word is padded with spaces.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    let Some(last) = bytes.len().checked_sub(8) else {
        let mut word = [b' '; 8];
        word.get_mut(..bytes.len())
            .unwrap_or_default()
            .copy_from_slice(bytes);
        return first_special(word).is_none();
    };
    let mut flags = 0;
    let mut at = 0;
    while let Some(word) = word_at(bytes, at.min(last)) {
        flags |= special_bytes(u64::from_le_bytes(word));
        if at >= last {
            break;
        }
        at += 8;
    }
    flags == 0
}

/// The eight bytes of `bytes` from `at`, when there are that many.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> Option<[u8; 8]> {
    bytes.get(at..at + 8)?.try_into().ok()
}

/// The index of the first `"`, `\\` or control byte of `word`, if any:
/// its lowest flagged byte (see [`special_bytes`]).
#[inline]
fn first_special(word: [u8; 8]) -> Option<usize> {
    let flags = special_bytes(u64::from_le_bytes(word));
    (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize)
}

/// SWAR (the classic "has a zero byte" / "has a byte less than n" word
/// tricks): the high bit of each byte of `w` (little-endian) that is `"`,
/// `\\` or below 0x20 is set. Bits above the lowest flagged byte may be
/// false positives (a borrow); the lowest one never is.
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// Lowercase hex SHA-256 of `text`.
#[cfg(test)]
fn sha256_hex(text: &str) -> String {
    crate::crypto::hex_encode(&<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
}

/// Collapses each run of neighbours that are `same` to the run's last
/// element (after a stable sort by key: the last occurrence of a key wins).
fn dedup_keep_last<T>(items: &mut Vec<T>, same: impl Fn(&T, &T) -> bool) {
    items.dedup_by(|later, kept| {
        let repeat = same(later, kept);
        if repeat {
            std::mem::swap(later, kept);
        }
        repeat
    });
}

/// The compact JSON text of `v` (see [`write_compact`]).
fn compact_string(v: &JsonValue) -> String {
    let mut text = String::new();
    write_compact(&mut text, v, None);
    text
}

/// An open container while writing compact JSON: its members still to
/// write, its tape index, and how many were written.
enum CompactFrame<'a> {
    Array(std::slice::Iter<'a, JsonValue>, usize, u32),
    Object(std::slice::Iter<'a, (String, JsonValue)>, usize, u32),
}

/// Writes `v` as compact JSON text: no whitespace, members in their order
/// with repeated keys kept, numbers as their text. With `tape`, also
/// writes the tape the parser would make of that text (what
/// [`JsonDoc::from_value`] needs, without parsing the text again). Not the
/// canonical form: the canonical writer reads the tape. Iterative, so any
/// depth is fine.
pub(crate) fn write_compact(out: &mut String, v: &JsonValue, mut tape: Option<&mut Vec<Node>>) {
    fn put(tape: &mut Option<&mut Vec<Node>>, kind: NodeKind, escaped: bool, a: usize, b: usize) {
        if let Some(nodes) = tape {
            nodes.push(Node::new(kind, escaped, tape_u32(a), tape_u32(b)));
        }
    }
    fn string(out: &mut String, tape: &mut Option<&mut Vec<Node>>, s: &str) {
        let start = out.len() + 1;
        write_escaped_str(out, s);
        let end = out.len() - 1;
        // Escaping lengthens exactly the strings it changes.
        put(tape, NodeKind::String, end - start != s.len(), start, end);
    }
    fn close(tape: &mut Option<&mut Vec<Node>>, index: usize, count: u32) {
        if let Some(nodes) = tape {
            let end = tape_u32(nodes.len());
            if let Some(node) = nodes.get_mut(index) {
                node.close(count, end);
            }
        }
    }
    let len = |tape: &Option<&mut Vec<Node>>| tape.as_ref().map_or(0, |nodes| nodes.len());
    let mut stack: Vec<CompactFrame<'_>> = Vec::new();
    let mut next = Some(v);
    loop {
        if let Some(value) = next.take() {
            match value {
                JsonValue::Null => {
                    out.push_str("null");
                    put(&mut tape, NodeKind::Null, false, 0, 0);
                }
                JsonValue::Bool(true) => {
                    out.push_str("true");
                    put(&mut tape, NodeKind::True, false, 0, 0);
                }
                JsonValue::Bool(false) => {
                    out.push_str("false");
                    put(&mut tape, NodeKind::False, false, 0, 0);
                }
                JsonValue::Number(n) => {
                    let start = out.len();
                    out.push_str(n.as_str());
                    put(&mut tape, NodeKind::Number, false, start, out.len());
                }
                JsonValue::String(s) => string(out, &mut tape, s),
                JsonValue::Array(items) => {
                    out.push('[');
                    let index = len(&tape);
                    put(&mut tape, NodeKind::Array, false, 0, index + 1);
                    stack.push(CompactFrame::Array(items.iter(), index, 0));
                }
                JsonValue::Object(obj) => {
                    out.push('{');
                    let index = len(&tape);
                    put(&mut tape, NodeKind::Object, false, 0, index + 1);
                    stack.push(CompactFrame::Object(obj.0.iter(), index, 0));
                }
            }
        }
        let Some(frame) = stack.last_mut() else {
            return;
        };
        match frame {
            CompactFrame::Array(items, index, count) => match items.next() {
                Some(item) => {
                    if *count > 0 {
                        out.push(',');
                    }
                    *count += 1;
                    next = Some(item);
                }
                None => {
                    out.push(']');
                    close(&mut tape, *index, *count);
                    stack.pop();
                }
            },
            CompactFrame::Object(members, index, count) => match members.next() {
                Some((key, item)) => {
                    if *count > 0 {
                        out.push(',');
                    }
                    *count += 1;
                    string(out, &mut tape, key);
                    out.push(':');
                    next = Some(item);
                }
                None => {
                    out.push('}');
                    close(&mut tape, *index, *count);
                    stack.pop();
                }
            },
        }
    }
}

/// Converts a `serde_json` value (what [`ContextBuilder::args`] takes);
/// numbers take `serde_json::Number`'s `Display` text (always valid JSON
/// number syntax; should it ever not be, the number becomes `null`).
/// Recurses over the value's depth.
///
/// [`ContextBuilder::args`]: crate::ContextBuilder::args
pub(crate) fn from_serde(v: &serde_json::Value) -> JsonValue {
    match v {
        serde_json::Value::Null => JsonValue::Null,
        serde_json::Value::Bool(b) => JsonValue::Bool(*b),
        serde_json::Value::Number(n) => match JsonNumber::parse(&n.to_string()) {
            Some(n) => JsonValue::Number(n),
            None => JsonValue::Null,
        },
        serde_json::Value::String(s) => JsonValue::String(s.clone()),
        serde_json::Value::Array(items) => JsonValue::Array(items.iter().map(from_serde).collect()),
        serde_json::Value::Object(map) => JsonValue::Object(JsonObject(
            map.iter()
                .map(|(k, v)| (k.clone(), from_serde(v)))
                .collect(),
        )),
    }
}

/// Converts to a `serde_json` value (for tests that compare with it). Numbers are parsed as `u64`, else `i64`,
/// else `f64` (a non-finite `f64`, e.g. from `1e400`, becomes `null`); for
/// repeated object keys the last value wins. Recurses over the value's depth.
#[cfg(test)]
fn to_serde(v: &JsonValue) -> serde_json::Value {
    match v {
        JsonValue::Null => serde_json::Value::Null,
        JsonValue::Bool(b) => serde_json::Value::Bool(*b),
        JsonValue::Number(n) => number_to_serde(n.as_str()),
        JsonValue::String(s) => serde_json::Value::String(s.clone()),
        JsonValue::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        JsonValue::Object(obj) => {
            let mut map = serde_json::Map::new();
            for (k, v) in obj.iter() {
                map.insert(k.to_owned(), to_serde(v));
            }
            serde_json::Value::Object(map)
        }
    }
}

#[cfg(test)]
fn number_to_serde(text: &str) -> serde_json::Value {
    if let Ok(u) = text.parse::<u64>() {
        return serde_json::Value::from(u);
    }
    if let Ok(i) = text.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    match text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        Some(n) => serde_json::Value::Number(n),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn canonical_string(v: &JsonValue) -> String {
        v.canonical_string()
    }

    fn sha256_canonical_hex(v: &JsonValue) -> String {
        v.sha256_canonical_hex()
    }

    /// The byte-at-a-time escaper the word-at-a-time one must agree with.
    fn naive_escape(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(CONTROL_ESCAPES[c as usize]),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn lowest_special_byte_of_a_word_is_exact() {
        let interesting = [
            0u8,
            0x1f,
            0x20,
            b'"',
            b'\\',
            b'a',
            0x7f,
            0x80,
            0xa0,
            0xff,
            0x21,
            0x5c + 1,
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut word = [0u8; 8];
            for byte in &mut word {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = interesting[(seed % interesting.len() as u64) as usize];
            }
            let first = word
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let flags = special_bytes(u64::from_le_bytes(word));
            let found = (flags != 0).then(|| (flags.trailing_zeros() / 8) as usize);
            assert_eq!(found, first, "{word:?}");
        }
    }

    #[test]
    fn word_at_a_time_escaping_matches_byte_at_a_time() {
        let alphabet = [
            'a', 'é', '"', '\\', '\n', '\u{1f}', '\u{7f}', ' ', '😀', '\u{0}', 'Z', '\u{80}',
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..64 {
            for _ in 0..40 {
                let text: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let mut ours = String::new();
                write_escaped_str(&mut ours, &text);
                assert_eq!(ours, naive_escape(&text), "{text:?}");
            }
        }
    }

    #[test]
    fn one_special_byte_anywhere_is_escaped() {
        // The plain-text check reads overlapping and space-padded words: a
        // single byte to escape must be found at every position.
        for len in 0..40 {
            let plain: String = "aé~ Z\u{7f}".chars().cycle().take(len).collect();
            let mut ours = String::new();
            write_escaped_str(&mut ours, &plain);
            assert_eq!(ours, naive_escape(&plain), "{plain:?}");
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
                    let text: String = plain
                        .chars()
                        .enumerate()
                        .map(|(i, c)| if i == at { special } else { c })
                        .collect();
                    let mut ours = String::new();
                    write_escaped_str(&mut ours, &text);
                    assert_eq!(ours, naive_escape(&text), "{text:?}");
                }
            }
        }
    }

    fn p(text: &str) -> Result<JsonValue, JsonError> {
        parse(text, &JsonLimits::default())
    }

    fn canon(text: &str) -> String {
        canonical_string(&p(text).expect("valid JSON"))
    }

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_escaped_str(&mut out, s);
        out
    }

    #[test]
    fn hash_vectors() {
        let cases = [
            (
                "{}",
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            ),
            (
                "null",
                "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b",
            ),
            (
                "[]",
                "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
            ),
            (
                r#"{"merchant":"amazon.com","amount":20}"#,
                "e52fbb7e3d37b667d250b2691ae61a2f5040a72a32b25289ba41f02f5fccc8e6",
            ),
            (
                " { \"amount\" : 20 ,\n \"merchant\" : \"amazon.com\" } ",
                "e52fbb7e3d37b667d250b2691ae61a2f5040a72a32b25289ba41f02f5fccc8e6",
            ),
        ];
        for (text, hash) in cases {
            assert_eq!(sha256_canonical_hex(&p(text).unwrap()), hash, "{text}");
        }
        assert_eq!(
            canon(r#"{"merchant":"amazon.com","amount":20}"#),
            r#"{"amount":20,"merchant":"amazon.com"}"#
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(escaped(""), r#""""#);
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(escaped("\u{0}\u{1f}\u{b}"), r#""\u0000\u001f\u000b""#);
        assert_eq!(escaped("/\u{7f}é😀"), "\"/\u{7f}é😀\"");
        assert_eq!(escaped("\"x\""), r#""\"x\"""#);
        for c in 0u32..0x20 {
            let s = char::from_u32(c).unwrap().to_string();
            assert_eq!(
                escaped(&s),
                serde_json::to_string(&s).unwrap(),
                "control {c:#x}"
            );
        }
        let mixed = "ab\u{1}cd\"é\\\u{7f}\u{1f}x/y\n";
        assert_eq!(escaped(mixed), serde_json::to_string(mixed).unwrap());
        // Canonical strings are re-escaped.
        assert_eq!(canon(r#""\u00e9""#), "\"é\"");
        assert_eq!(canon(r#""\/""#), r#""/""#);
        assert_eq!(canon(r#""\u001f""#), r#""\u001f""#);
        assert_eq!(canon(r#""\u001F""#), r#""\u001f""#);
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(canon(r#""\uD83D\uDE00""#), "\"😀\"");
    }

    #[test]
    fn string_decoding() {
        let v = p(r#""a\"\\\/\b\f\n\r\tz\u0041\u00e9\u20AC\ud834\udd1e""#).unwrap();
        assert_eq!(v.as_str(), Some("a\"\\/\u{8}\u{c}\n\r\tzAé€𝄞"));
        assert_eq!(p("\"é😀\"").unwrap().as_str(), Some("é😀"));
        assert_eq!(p("\"\u{7f}\"").unwrap().as_str(), Some("\u{7f}"));
    }

    #[test]
    fn duplicate_keys() {
        let v = p(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3);
        assert!(!obj.is_empty());
        assert_eq!(
            obj.get("a"),
            Some(&JsonValue::Number(JsonNumber::parse("3").unwrap()))
        );
        assert_eq!(obj.get("c"), None);
        let keys: Vec<&str> = obj.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "a"]);
        assert_eq!(canonical_string(&v), r#"{"a":3,"b":2}"#);
        assert_eq!(
            canon(r#"{"z":{"y":1,"x":[1,{"b":1,"a":2}]},"a":null}"#),
            r#"{"a":null,"z":{"x":[1,{"a":2,"b":1}],"y":1}}"#
        );
        assert_eq!(
            canon(r#"{"k":1,"k":2,"k":{"q":0,"q":[]}}"#),
            r#"{"k":{"q":[]}}"#
        );
        assert_eq!(to_serde(&v), serde_json::json!({"a": 3, "b": 2}));
        let mut built = JsonObject::new();
        assert!(built.is_empty());
        built.insert("x".into(), JsonValue::Null);
        built.insert("x".into(), JsonValue::Bool(true));
        assert_eq!(built.get("x"), Some(&JsonValue::Bool(true)));
    }

    #[test]
    fn key_order_is_byte_order() {
        // U+FFFF sorts before U+10000 in code point (and UTF-8) order but
        // after it in UTF-16 order.
        assert_eq!(
            canon("{\"\u{10000}\":1,\"\u{ffff}\":2,\"B\":3,\"a\":4,\"\":5,\"aa\":6}"),
            "{\"\":5,\"B\":3,\"a\":4,\"aa\":6,\"\u{ffff}\":2,\"\u{10000}\":1}"
        );
    }

    #[test]
    fn number_text_kept() {
        for text in [
            "0",
            "-0",
            "1",
            "1.0",
            "1.50",
            "1e3",
            "1E+2",
            "1e-2",
            "-0.0",
            "-0e0",
            "1e400",
            "-1e400",
            "0.1e-400",
            "1234567890123456789012345678901234567890",
            "-1234567890123456789012345678901234567890.000",
        ] {
            match p(text).unwrap() {
                JsonValue::Number(n) => assert_eq!(n.as_str(), text),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("[-0,-0.0,-0e0,1.50,1E+2]"), "[0,-0.0,-0e0,1.50,1E+2]");
        assert_eq!(canon("[ 1.0 , 1e3 ]"), "[1.0,1e3]");
        assert!(JsonNumber::parse("12").unwrap().is_integer_syntax());
        assert!(JsonNumber::parse("-0").unwrap().is_integer_syntax());
        assert!(!JsonNumber::parse("1.0").unwrap().is_integer_syntax());
        assert!(!JsonNumber::parse("1e3").unwrap().is_integer_syntax());
        assert!(!JsonNumber::parse("1E3").unwrap().is_integer_syntax());
        for bad in [
            "", "-", "01", "-01", "00", "1.", ".5", "+1", "1e", "1e+", "1e-", "1.e3", " 1", "1 ",
            "1x", "0x1", "NaN", "Infinity", "1.5.2", "--1", "1e1.5",
        ] {
            assert!(JsonNumber::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn to_and_from_serde() {
        let v = p(r#"[1,-1,18446744073709551615,-9223372036854775808,1.5,1e3,1e400,-0,"s",null,true,{"k":[]}]"#).unwrap();
        assert_eq!(
            to_serde(&v),
            serde_json::json!([
                1,
                -1,
                18446744073709551615u64,
                -9223372036854775808i64,
                1.5,
                1000.0,
                null,
                0,
                "s",
                null,
                true,
                {"k": []}
            ])
        );
        let s = serde_json::json!({"b": [1, -2, 2.5, "x", null, false], "a": {}});
        let back = from_serde(&s);
        assert_eq!(
            canonical_string(&back),
            r#"{"a":{},"b":[1,-2,2.5,"x",null,false]}"#
        );
        assert_eq!(to_serde(&back), s);
    }

    #[test]
    fn kinds_and_accessors() {
        let v = p(r#"[null,true,1,"s",[],{}]"#).unwrap();
        let JsonValue::Array(items) = &v else {
            panic!()
        };
        let kinds: Vec<_> = items.iter().map(JsonValue::kind_name).collect();
        assert_eq!(
            kinds,
            ["null", "bool", "number", "string", "array", "object"]
        );
        assert_eq!(items[3].as_str(), Some("s"));
        assert_eq!(items[2].as_str(), None);
        assert!(items[5].as_object().is_some());
        assert!(items[4].as_object().is_none());
        assert_eq!(v.kind_name(), "array");
    }

    fn err_msg(text: &str) -> String {
        p(text).expect_err(text).message
    }

    #[test]
    fn rejections() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF while parsing a value"),
            ("   \n\t", "EOF while parsing a value"),
            ("\u{feff}{}", "expected value"),
            ("nul", "EOF while parsing a value"),
            ("nulL", "expected ident"),
            ("True", "expected value"),
            ("NaN", "expected value"),
            ("Infinity", "expected value"),
            ("-Infinity", "invalid number"),
            ("01", "invalid number"),
            ("-01", "invalid number"),
            ("1.", "EOF while parsing a value"),
            ("1.x", "invalid number"),
            (".5", "expected value"),
            ("+1", "expected value"),
            ("1e", "EOF while parsing a value"),
            ("1e+", "EOF while parsing a value"),
            ("1e+x", "invalid number"),
            ("-", "EOF while parsing a value"),
            ("1 2", "trailing characters"),
            ("{} x", "trailing characters"),
            ("\"abc", "EOF while parsing a string"),
            (
                "\"a\u{1}\"",
                "control character (\\u0000-\\u001F) found while parsing a string",
            ),
            (
                "\"a\nb\"",
                "control character (\\u0000-\\u001F) found while parsing a string",
            ),
            (r#""\x""#, "invalid escape"),
            (r#""\'""#, "invalid escape"),
            (r#""\u12G4""#, "invalid escape"),
            (r#""\u12""#, "EOF while parsing a string"),
            (r#""\ud800""#, "unexpected end of hex escape"),
            (r#""\ud800x""#, "unexpected end of hex escape"),
            (r#""\ud800\n""#, "unexpected end of hex escape"),
            (r#""\ud800\u0041""#, "lone leading surrogate in hex escape"),
            (r#""\ud800\ud800""#, "lone leading surrogate in hex escape"),
            (r#""\udc00""#, "lone trailing surrogate in hex escape"),
            ("[1,]", "trailing comma"),
            ("[1 2]", "expected `,` or `]`"),
            ("[", "EOF while parsing a list"),
            ("[1", "EOF while parsing a list"),
            ("[1,", "EOF while parsing a value"),
            ("[,1]", "expected value"),
            ("{", "EOF while parsing an object"),
            ("{\"a\"", "EOF while parsing an object"),
            ("{\"a\" 1}", "expected `:`"),
            ("{\"a\":}", "expected value"),
            ("{\"a\":1,}", "trailing comma"),
            ("{\"a\":1 \"b\":2}", "expected `,` or `}`"),
            ("{1:2}", "key must be a string"),
            ("{\"a\":1,2:3}", "key must be a string"),
            ("{\"a\":1,", "EOF while parsing a value"),
            ("{'a':1}", "key must be a string"),
        ];
        for (text, message) in cases {
            assert_eq!(err_msg(text), *message, "{text:?}");
        }
    }

    #[test]
    fn depth_limits() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(p(&nested(127)).is_ok());
        assert_eq!(err_msg(&nested(128)), "recursion limit exceeded");
        let objects = |n: usize| format!("{}{{}}{}", "{\"a\":".repeat(n - 1), "}".repeat(n - 1));
        assert!(p(&objects(127)).is_ok());
        assert_eq!(err_msg(&objects(128)), "recursion limit exceeded");
        // Same boundary as serde_json.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(127)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(128)).is_err());

        let huge = JsonLimits {
            max_depth: 1_000_000,
            max_len: usize::MAX,
        };
        let e = parse(&"[".repeat(200_000), &huge).unwrap_err();
        assert_eq!(e.message, "recursion limit exceeded");
        assert_eq!((e.line, e.column), (1, 513));
        assert!(parse(&nested(200_000), &huge).is_err());
        // The clamp itself: 512 nested arrays parse, canonicalize (iteratively)
        // and clone and drop on a test thread's stack.
        let deep = parse(&nested(512), &huge).unwrap();
        assert_eq!(canonical_string(&deep), nested(512));
        let copy = deep.clone();
        assert_eq!(copy, deep);
        drop(deep);
        assert!(parse(&nested(513), &huge).is_err());

        let zero = JsonLimits {
            max_depth: 0,
            max_len: 100,
        };
        assert!(parse("1", &zero).is_ok());
        assert!(parse("[]", &zero).is_err());
    }

    #[test]
    fn length_limit() {
        let limits = JsonLimits {
            max_depth: 127,
            max_len: 10,
        };
        assert!(parse("[1,2,3,44]", &limits).is_ok());
        let e = parse("[1,2,3,444]", &limits).unwrap_err();
        assert!(e.message.contains("11 bytes"), "{e}");
        assert!(e.message.contains("limit of 10"), "{e}");
        assert!(parse_bytes(b"[1,2,3,444]", &limits).is_err());
        assert!(parse_bytes(b"[1,2,3,44]", &limits).is_ok());
    }

    #[test]
    fn bytes_must_be_utf8() {
        let limits = JsonLimits::default();
        assert_eq!(
            parse_bytes("\"é\"".as_bytes(), &limits).unwrap().as_str(),
            Some("é")
        );
        let e = parse_bytes(b"\"a\xffb\"", &limits).unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        assert!(parse_bytes(b"[1, \xc3]", &limits).is_err());
        assert!(parse_bytes(b"\xef\xbb\xbf{}", &limits).is_err());
    }

    #[test]
    fn positions() {
        let e = p("").unwrap_err();
        assert_eq!((e.line, e.column), (1, 0));
        assert_eq!(
            e.to_string(),
            "EOF while parsing a value at line 1 column 0"
        );
        let e = p("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!(e.message, "expected `:`");
        assert_eq!((e.line, e.column), (3, 7));
        let e = p("[1,\n2,\nx]").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1));
    }

    /// Inputs where serde_json (without `arbitrary_precision`) rejects a
    /// number as out of range but the grammar, and therefore this parser,
    /// accepts it.
    const OUT_OF_RANGE: &[&str] = &["1e400", "-1e400", "[1e309]", "{\"a\":-1.5e999}"];

    #[test]
    fn agrees_with_serde_json() {
        let inputs: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1",
            "-1",
            "1.5",
            "-1.5e-3",
            "1E+2",
            "1e400",
            "-1e400",
            "[1e309]",
            "{\"a\":-1.5e999}",
            "123456789012345678901234567890",
            "\"\"",
            "\"a\\u00e9\\/\"",
            "\"\\ud83d\\ude00\"",
            "[]",
            "{}",
            "[1,[2,[3]]]",
            "{\"a\":{\"b\":[true,false,null]}}",
            " \t\r\n[ 1 , 2 ] \n",
            "{\"a\":1,\"a\":2}",
            "\"\u{7f}\"",
            "\"é\"",
            "",
            " ",
            "\u{feff}null",
            "nul",
            "nulll",
            "tru",
            "True",
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "1.e3",
            "-",
            "--1",
            "1 2",
            "[] []",
            "\"abc",
            "\"a\u{1}\"",
            "\"a\tb\"",
            "\"\\x\"",
            "\"\\u12G4\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\ud800x\"",
            "\"\\ud800\\n\"",
            "\"\\ud800\\u0041\"",
            "\"\\udc00\"",
            "\"\\ud800\\ud800\\udc00\"",
            "[1,]",
            "[1 2]",
            "[",
            "[1",
            "[1,",
            "[,1]",
            "{",
            "{\"a\"",
            "{\"a\" 1}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "{1:2}",
            "{\"a\":1,2:3}",
            "{\"a\":1,",
            "{'a':1}",
            "[1]x",
            "{\"a\":1}}",
            "[\"a\",\n  tru]",
            "\n\n  [1,\n  ]",
            "1\u{a0}",
            "[1\u{b}]",
            "\"\\u0000\"",
            "\"\\U0041\"",
            "[-]",
            "[0-1]",
            "[1.0e]",
            "{\"\\u0041\":1}",
        ];
        let mut mismatches = Vec::new();
        for text in inputs {
            let ours = p(text);
            let theirs = serde_json::from_str::<serde_json::Value>(text);
            if OUT_OF_RANGE.contains(text) {
                assert!(ours.is_ok(), "{text:?}");
                assert!(theirs.is_err(), "{text:?}");
                continue;
            }
            match (&ours, &theirs) {
                // `to_serde` maps the integer `-0` to `0`; serde_json makes it `-0.0`.
                (Ok(a), Ok(b)) if *text != "-0" => {
                    if *b != to_serde(a) {
                        mismatches.push(format!("{text:?}: value {a:?} vs {b}"));
                    }
                }
                (Ok(_), Ok(_)) => {}
                (Err(a), Err(b)) => {
                    let mut b = b.to_string();
                    // serde_json calls a lone low surrogate a "lone leading
                    // surrogate"; we word it accurately (same position).
                    if *text == "\"\\udc00\"" {
                        b = b.replace("leading", "trailing");
                    }
                    if a.to_string() != b {
                        mismatches.push(format!("{text:?}: `{a}` vs `{b}`"));
                    }
                }
                _ => mismatches.push(format!("{text:?}: {ours:?} vs {theirs:?}")),
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}
