//! [`JsonDoc`]: a parsed document kept as its source text plus a flat tape
//! of its values, and the crate's one canonical JSON writer, which works on
//! it. A request body is read once on the hot path: looking up `arg.*`
//! paths and writing the canonical form (for `args_hash`) need no tree of
//! owned strings, and dropping the document frees two buffers. A
//! [`JsonValue`] tree is written canonically by becoming a document first
//! ([`JsonDoc::from_value`]).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::crypto::Buffered;

use super::{
    JsonError, JsonLimits, JsonSink, JsonValue, check_tape_len, decode_string, dedup_keep_last,
    parse_tape, tape_u32, utf8, value_from_tape, write_compact, write_escaped_str,
};

/// What a tape node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Null = 0,
    True = 1,
    False = 2,
    Number = 3,
    String = 4,
    Array = 5,
    Object = 6,
}

impl NodeKind {
    fn from_bits(bits: u32) -> NodeKind {
        match bits {
            1 => NodeKind::True,
            2 => NodeKind::False,
            3 => NodeKind::Number,
            4 => NodeKind::String,
            5 => NodeKind::Array,
            6 => NodeKind::Object,
            _ => NodeKind::Null,
        }
    }
}

/// One value on the tape, in document order (a container precedes its
/// children; an object's children alternate key, value). Eight bytes: the
/// kind in the top three bits of the first word, the escape flag in the
/// top bit of the second, and two 29-bit numbers `a` and `b`:
///
/// - `Number`: `a..b` is its text.
/// - `String`: `a..b` is its raw contents between the quotes; `escaped`
///   says whether they contain a backslash escape.
/// - `Array` / `Object`: `a` is the number of elements (members), `b` the
///   tape index just past the container's last descendant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    kind_a: u32,
    escaped_b: u32,
}

/// The largest `a` or `b` a node holds; [`super::MAX_SUPPORTED_LEN`] keeps
/// offsets, counts and indexes below it.
pub(crate) const NODE_MAX: u32 = (1 << 29) - 1;

impl Node {
    pub(crate) fn new(kind: NodeKind, escaped: bool, a: u32, b: u32) -> Node {
        Node {
            kind_a: ((kind as u32) << 29) | a.min(NODE_MAX),
            escaped_b: (u32::from(escaped) << 31) | b.min(NODE_MAX),
        }
    }

    pub(crate) fn kind(&self) -> NodeKind {
        NodeKind::from_bits(self.kind_a >> 29)
    }

    pub(crate) fn escaped(&self) -> bool {
        self.escaped_b >> 31 == 1
    }

    pub(crate) fn a(&self) -> u32 {
        self.kind_a & NODE_MAX
    }

    pub(crate) fn b(&self) -> u32 {
        self.escaped_b & NODE_MAX
    }

    /// Closes a container: `count` children, subtree ending at `end`.
    pub(crate) fn close(&mut self, count: u32, end: u32) {
        *self = Node::new(self.kind(), false, count, end);
    }

    /// `a..b` as byte offsets.
    pub(crate) fn span(&self) -> (usize, usize) {
        (self.a() as usize, self.b() as usize)
    }
}

/// A JSON document parsed once and kept as its source text plus a flat
/// index of its values.
///
/// It accepts and rejects exactly what [`JsonValue::parse`] does, under
/// the same [`JsonLimits`], and means the same value: numbers keep their
/// source text, duplicate keys are kept and the last one wins on lookup.
/// Reading it costs two allocations (a copy of the text and the index),
/// or one with [`JsonDoc::from_bytes`], which keeps the caller's buffer,
/// however many strings the document holds: that is why the tower layer
/// reads request bodies into one. The index takes 8 bytes per value, and a
/// value takes at least two bytes of input with its separator, so a
/// document holds at most about five times its length in memory (input
/// text included). [`JsonDoc::to_value`] builds the equivalent
/// [`JsonValue`]. [`Args`](crate::Args) holds one; it is not public.
#[derive(Clone)]
pub(crate) struct JsonDoc {
    /// The source, checked to be UTF-8 when the document was parsed.
    text: Bytes,
    nodes: Vec<Node>,
}

impl JsonDoc {
    /// Parses `text` (copied into the document) under `limits`.
    pub(crate) fn parse(text: &str, limits: &JsonLimits) -> Result<JsonDoc, JsonError> {
        let nodes = parse_tape(text, limits)?;
        Ok(JsonDoc {
            text: Bytes::copy_from_slice(text.as_bytes()),
            nodes,
        })
    }

    /// The document of a tree: its compact text and the tape the parser
    /// would make of it, written together. Fails only when that text is
    /// longer than a tape can index (512 MiB).
    pub(crate) fn from_value(value: &JsonValue) -> Result<JsonDoc, JsonError> {
        let mut text = String::new();
        let mut nodes = Vec::new();
        write_compact(&mut text, value, Some(&mut nodes));
        check_tape_len(text.len())?;
        Ok(JsonDoc {
            text: Bytes::from(text),
            nodes,
        })
    }

    /// Parses a buffer, which must be valid UTF-8, under `limits`, and
    /// keeps it: no copy (a request body read by an HTTP server, say).
    pub(crate) fn from_bytes(bytes: Bytes, limits: &JsonLimits) -> Result<JsonDoc, JsonError> {
        let nodes = parse_tape(utf8(&bytes, limits)?, limits)?;
        Ok(JsonDoc { text: bytes, nodes })
    }

    /// The source text, as given (checked again as UTF-8 on each call,
    /// with SIMD: it takes time in proportion to its length, ~0.1 µs per
    /// KiB).
    pub(crate) fn text(&self) -> &str {
        simdutf8::basic::from_utf8(&self.text).unwrap_or_default()
    }

    /// The top-level value.
    pub(crate) fn root(&self) -> JsonRef<'_> {
        JsonRef {
            doc: self,
            index: 0,
        }
    }

    /// The equivalent [`JsonValue`] (the same as [`JsonValue::parse`] of
    /// [`text`](Self::text)).
    pub(crate) fn to_value(&self) -> JsonValue {
        self.root().to_value()
    }

    /// The canonical JSON text (see [`JsonValue::canonical_string`]).
    /// Strings without escapes are copied from the source as they are
    /// (their canonical escaping is the identity).
    pub(crate) fn canonical_string(&self) -> String {
        let bytes = self.canonical_bytes();
        // Every piece is whole UTF-8 from the source (cut at ASCII bytes)
        // or written by the escaper, so this never falls back.
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Lowercase hex SHA-256 of the canonical JSON: the `args_hash` of
    /// these arguments. A document of up to 64 KiB is written into a
    /// buffer kept per thread (at most 64 KiB each, reused from call to
    /// call) and hashed at once; a longer one streams through a buffer on
    /// the stack. Either way, no allocation for the canonical text.
    pub(crate) fn sha256_canonical_hex(&self) -> String {
        let digest = if self.text.len() <= Scratch::KEEP_TEXT {
            // Written whole into this thread's buffer, then hashed at once.
            let mut buffers = Scratch::take();
            let Scratch {
                stack,
                order,
                members,
                out,
            } = &mut buffers;
            let mut sink = WindowBuf::new(out, self.text.len());
            write_canonical_with(self, 0, &mut sink, stack, order, members);
            let digest = <sha2::Sha256 as sha2::Digest>::digest(sink.written());
            buffers.give_back();
            digest
        } else {
            let mut sink = Buffered::new(<sha2::Sha256 as sha2::Digest>::new());
            write_canonical_at(self, 0, &mut sink);
            sha2::Digest::finalize(sink.finish())
        };
        crate::crypto::hex_encode(&digest)
    }

    fn canonical_bytes(&self) -> Vec<u8> {
        // Canonical JSON is never longer than its source: whitespace goes,
        // duplicates go, and re-escaping never lengthens a string.
        let mut out = Vec::with_capacity(self.text.len());
        write_canonical_at(self, 0, &mut out);
        out
    }

    fn node(&self, index: usize) -> Option<&Node> {
        self.nodes.get(index)
    }

    /// The tape index just past the value at `index` and its descendants.
    fn skip(&self, index: usize) -> usize {
        match self.node(index) {
            Some(n) if matches!(n.kind(), NodeKind::Array | NodeKind::Object) => n.b() as usize,
            _ => index + 1,
        }
    }

    /// The raw source text of a number or string node.
    fn raw(&self, node: &Node) -> &str {
        // A piece cut at ASCII bytes of UTF-8 text: always UTF-8.
        std::str::from_utf8(self.raw_bytes(node)).unwrap_or_default()
    }

    /// [`raw`](Self::raw) as bytes (no char-boundary checks).
    fn raw_bytes(&self, node: &Node) -> &[u8] {
        let (start, end) = node.span();
        self.text.get(start..end).unwrap_or_default()
    }

    /// The decoded text of a string node, borrowed when it has no escape.
    fn string(&self, node: &Node) -> Cow<'_, str> {
        if node.escaped() {
            // Decoded from the string alone, quotes included.
            let (start, end) = node.span();
            let quoted = self
                .text
                .get(start.saturating_sub(1)..end + 1)
                .and_then(|q| std::str::from_utf8(q).ok())
                .unwrap_or_default();
            let inner = Node::new(
                NodeKind::String,
                true,
                1,
                tape_u32(quoted.len().saturating_sub(1)),
            );
            Cow::Owned(decode_string(quoted, &inner))
        } else {
            Cow::Borrowed(self.raw(node))
        }
    }
}

impl fmt::Debug for JsonDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonDoc").field(&self.text()).finish()
    }
}

/// Equal when the documents hold the same value, as [`JsonValue`]'s
/// equality sees it (same members in the same order, same number text),
/// whatever the whitespace or escaping of the source.
impl PartialEq for JsonDoc {
    fn eq(&self, other: &JsonDoc) -> bool {
        self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .enumerate()
                .all(|(i, (a, b))| {
                    a.kind() == b.kind()
                        && match a.kind() {
                            NodeKind::Null | NodeKind::True | NodeKind::False => true,
                            NodeKind::Number => self.raw(a) == other.raw(b),
                            NodeKind::String => self.string(a) == other.string(b),
                            NodeKind::Array | NodeKind::Object => {
                                a.a() == b.a() && self.skip(i) == other.skip(i)
                            }
                        }
                })
    }
}

impl Eq for JsonDoc {}

/// A value inside a [`JsonDoc`], borrowed.
#[derive(Clone, Copy)]
pub(crate) struct JsonRef<'a> {
    doc: &'a JsonDoc,
    index: usize,
}

impl<'a> JsonRef<'a> {
    fn node(&self) -> Option<&'a Node> {
        self.doc.node(self.index)
    }

    fn kind(&self) -> NodeKind {
        self.node().map_or(NodeKind::Null, |n| n.kind())
    }

    /// The JSON kind: `"null"`, `"bool"`, `"number"`, `"string"`, `"array"`
    /// or `"object"` (the names [`JsonValue::kind_name`] uses).
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind() {
            NodeKind::Null => "null",
            NodeKind::True | NodeKind::False => "bool",
            NodeKind::Number => "number",
            NodeKind::String => "string",
            NodeKind::Array => "array",
            NodeKind::Object => "object",
        }
    }

    /// The number's exact source text, if this is a number.
    pub(crate) fn as_number_text(&self) -> Option<&'a str> {
        self.node()
            .filter(|n| n.kind() == NodeKind::Number)
            .map(|n| self.doc.raw(n))
    }

    /// The decoded text, if this is a string (borrowed from the source when
    /// it has no escape).
    pub(crate) fn as_str(&self) -> Option<Cow<'a, str>> {
        self.node()
            .filter(|n| n.kind() == NodeKind::String)
            .map(|n| self.doc.string(n))
    }

    /// The value of the last member named `key`, if this is an object
    /// that has one.
    pub(crate) fn get(&self, key: &str) -> Option<JsonRef<'a>> {
        let node = self.node().filter(|n| n.kind() == NodeKind::Object)?;
        let mut found = None;
        let mut member = self.index + 1;
        for _ in 0..node.a() {
            let key_node = self.doc.node(member)?;
            let matches = if key_node.escaped() {
                self.doc.string(key_node) == key
            } else {
                self.doc.raw_bytes(key_node) == key.as_bytes()
            };
            if matches {
                found = Some(member + 1);
            }
            member = self.doc.skip(member + 1);
        }
        found.map(|index| JsonRef {
            doc: self.doc,
            index,
        })
    }

    /// The members of an object in order, repeated keys included (none
    /// for any other kind).
    pub(crate) fn members(self) -> impl Iterator<Item = (Cow<'a, str>, JsonRef<'a>)> {
        let count = self
            .node()
            .filter(|n| n.kind() == NodeKind::Object)
            .map_or(0, |n| n.a());
        let doc = self.doc;
        let mut member = self.index + 1;
        (0..count).map(move |_| {
            let key = doc.node(member).map(|n| doc.string(n)).unwrap_or_default();
            let value = JsonRef {
                doc,
                index: member + 1,
            };
            member = doc.skip(member + 1);
            (key, value)
        })
    }

    /// This value as a document of its own, sharing the text (no copy):
    /// its part of the tape, container ends counted from its start.
    pub(crate) fn to_doc(self) -> JsonDoc {
        let end = self.doc.skip(self.index);
        let base = tape_u32(self.index);
        let nodes = self
            .doc
            .nodes
            .get(self.index..end)
            .unwrap_or_default()
            .iter()
            .map(|n| match n.kind() {
                NodeKind::Array | NodeKind::Object => {
                    Node::new(n.kind(), false, n.a(), n.b().saturating_sub(base))
                }
                _ => *n,
            })
            .collect();
        JsonDoc {
            text: self.doc.text.clone(),
            nodes,
        }
    }

    /// The equivalent [`JsonValue`].
    pub(crate) fn to_value(self) -> JsonValue {
        let end = self.doc.skip(self.index);
        match self.doc.nodes.get(self.index..end) {
            Some(nodes) => value_from_tape(self.doc.text(), nodes),
            None => JsonValue::Null,
        }
    }
}

impl fmt::Debug for JsonRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRef")
            .field("kind", &self.kind_name())
            .field("index", &self.index)
            .finish()
    }
}

/// Where the canonical writer puts bytes: a `Vec<u8>`, or a hasher.
trait ByteSink: JsonSink {
    fn bytes(&mut self, bytes: &[u8]);
    fn byte(&mut self, byte: u8);

    /// `text[start..end]`, where `text` is the whole source (so a sink may
    /// read past `end` for a faster copy).
    fn piece(&mut self, text: &[u8], start: usize, end: usize) {
        self.bytes(text.get(start..end).unwrap_or_default());
    }
}

impl ByteSink for Vec<u8> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn byte(&mut self, byte: u8) {
        self.push(byte);
    }
}

impl<U: sha2::digest::Update> ByteSink for Buffered<U> {
    fn bytes(&mut self, bytes: &[u8]) {
        Buffered::bytes(self, bytes);
    }

    fn byte(&mut self, byte: u8) {
        Buffered::byte(self, byte);
    }
}

/// Canonical text written into a reused buffer, sized for it up front.
/// Pieces of the source of up to [`WindowBuf::SLACK`] bytes are copied as
/// a fixed-size window (a couple of vector moves instead of a `memcpy`
/// call), the bytes past the piece being overwritten by what comes next.
struct WindowBuf<'a> {
    buf: &'a mut Vec<u8>,
    len: usize,
}

impl<'a> WindowBuf<'a> {
    const SLACK: usize = 32;

    /// Canonical text is never longer than its source: `source_len` bytes
    /// (plus the window slack) are made available; more are added if a
    /// piece ever needs them.
    fn new(buf: &'a mut Vec<u8>, source_len: usize) -> WindowBuf<'a> {
        let want = source_len + WindowBuf::SLACK;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        WindowBuf { buf, len: 0 }
    }

    fn written(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end + WindowBuf::SLACK, 0);
        }
        &mut self.buf[self.len..end]
    }
}

impl JsonSink for WindowBuf<'_> {
    fn put(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

impl ByteSink for WindowBuf<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn byte(&mut self, byte: u8) {
        self.room(1)[0] = byte;
        self.len += 1;
    }

    #[inline(always)]
    fn piece(&mut self, text: &[u8], start: usize, end: usize) {
        let n = end.saturating_sub(start);
        if n <= WindowBuf::SLACK
            && let Some(window) = text.get(start..start + WindowBuf::SLACK)
        {
            let mut fixed = [0u8; WindowBuf::SLACK];
            fixed.copy_from_slice(window);
            self.room(WindowBuf::SLACK).copy_from_slice(&fixed);
            self.len += n;
            return;
        }
        self.bytes(text.get(start..end).unwrap_or_default());
    }
}

/// An open container while writing canonical JSON from a tape.
enum Frame {
    /// The next element's tape index and how many elements are left.
    Array { next: usize, left: u32 },
    /// The object's members, sorted, as key indexes in `order[pos..end]`.
    Object {
        start: usize,
        pos: usize,
        end: usize,
    },
}

/// Writes the canonical form of the value at `root`: no whitespace, keys
/// sorted by their decoded bytes with the last duplicate written once,
/// strings escaped as [`write_escaped_str`] does, numbers as their text
/// except the integer `-0`. Iterative, with one shared buffer for the
/// member order of every open object.
fn write_canonical_at<S: ByteSink>(doc: &JsonDoc, root: usize, out: &mut S) {
    let mut buffers = Scratch::take();
    let Scratch {
        stack,
        order,
        members: scratch,
        ..
    } = &mut buffers;
    write_canonical_with(doc, root, out, stack, order, scratch);
    buffers.give_back();
}

/// The buffers the canonical writer needs, kept per thread between calls
/// so that hashing a request's args allocates nothing.
#[derive(Default)]
struct Scratch {
    stack: Vec<Frame>,
    order: Vec<u32>,
    members: Vec<(u64, u32)>,
    /// Canonical text of documents up to [`Scratch::KEEP_TEXT`] bytes.
    out: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl Scratch {
    /// Buffers larger than this (in elements) are freed, not kept.
    const KEEP: usize = 4096;
    /// Documents up to this length are written into `out` and hashed at
    /// once; longer ones stream through a stack buffer.
    const KEEP_TEXT: usize = 64 * 1024;

    /// This thread's buffers (empty ones if they are in use or gone).
    fn take() -> Scratch {
        SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default()
    }

    fn give_back(mut self) {
        for len in [
            self.stack.capacity(),
            self.order.capacity(),
            self.members.capacity(),
        ] {
            if len > Scratch::KEEP {
                return;
            }
        }
        if self.out.capacity() > Scratch::KEEP_TEXT + WindowBuf::SLACK {
            return;
        }
        self.stack.clear();
        self.order.clear();
        self.members.clear();
        let _ = SCRATCH.try_with(|cell| cell.set(self));
    }
}

fn write_canonical_with<S: ByteSink>(
    doc: &JsonDoc,
    root: usize,
    out: &mut S,
    stack: &mut Vec<Frame>,
    order: &mut Vec<u32>,
    scratch: &mut Vec<(u64, u32)>,
) {
    let mut next = Some(root);
    let mut first = true;
    loop {
        if let Some(index) = next.take() {
            let Some(node) = doc.node(index) else {
                return;
            };
            match node.kind() {
                NodeKind::Null => out.bytes(b"null"),
                NodeKind::True => out.bytes(b"true"),
                NodeKind::False => out.bytes(b"false"),
                NodeKind::Number => match doc.raw_bytes(node) {
                    b"-0" => out.byte(b'0'),
                    _ => out.piece(&doc.text, node.a() as usize, node.b() as usize),
                },
                NodeKind::String => write_string(doc, node, out),
                NodeKind::Array => {
                    out.byte(b'[');
                    stack.push(Frame::Array {
                        next: index + 1,
                        left: node.a(),
                    });
                    first = true;
                }
                NodeKind::Object => {
                    out.byte(b'{');
                    let start = order.len();
                    sorted_members(doc, index, node.a(), order, scratch);
                    stack.push(Frame::Object {
                        start,
                        pos: start,
                        end: order.len(),
                    });
                    first = true;
                }
            }
        }
        let Some(frame) = stack.last_mut() else {
            return;
        };
        match frame {
            Frame::Array { next: item, left } => {
                if *left == 0 {
                    out.byte(b']');
                    stack.pop();
                    first = false;
                    continue;
                }
                if !std::mem::replace(&mut first, false) {
                    out.byte(b',');
                }
                next = Some(*item);
                *item = doc.skip(*item);
                *left -= 1;
            }
            Frame::Object { start, pos, end } => {
                let Some(&key) = order.get(*pos).filter(|_| *pos < *end) else {
                    out.byte(b'}');
                    order.truncate(*start);
                    stack.pop();
                    first = false;
                    continue;
                };
                if !std::mem::replace(&mut first, false) {
                    out.byte(b',');
                }
                let key = key as usize;
                *pos += 1;
                if let Some((start, end)) = compact_member(doc, key) {
                    // `"key":value` as it is in the source: one piece.
                    out.piece(&doc.text, start, end);
                    continue;
                }
                if let Some(key_node) = doc.node(key) {
                    write_string(doc, key_node, out);
                }
                out.byte(b':');
                next = Some(key + 1);
            }
        }
    }
}

/// The source text of the member whose key is at tape index `key`, when
/// that text is already canonical: an unescaped key, then `:` with no
/// whitespace, then a string without escapes or a number other than `-0`.
#[inline(always)]
fn compact_member(doc: &JsonDoc, key: usize) -> Option<(usize, usize)> {
    let key_node = doc.node(key).filter(|n| !n.escaped())?;
    let value = doc.node(key + 1)?;
    let (key_start, key_end) = key_node.span();
    let (value_start, value_end) = value.span();
    // `key_end` is the key's closing quote; the colon follows it.
    let (start, end) = match value.kind() {
        NodeKind::String if !value.escaped() && value_start == key_end + 3 => {
            (key_start - 1, value_end + 1)
        }
        NodeKind::Number if value_start == key_end + 2 => (key_start - 1, value_end),
        _ => return None,
    };
    let member = doc.text.get(start..end)?;
    let is_zero = value.kind() == NodeKind::Number && member.ends_with(b":-0");
    (member.get(key_end + 1 - start) == Some(&b':') && !is_zero).then_some((start, end))
}

#[inline(always)]
fn write_string<S: ByteSink>(doc: &JsonDoc, node: &Node, out: &mut S) {
    if node.escaped() {
        write_escaped_str(out, &doc.string(node));
        return;
    }
    // No backslash, and the parser refused raw `"` and control characters:
    // the raw text, quotes included, is its own canonical form.
    let (start, end) = node.span();
    match start.checked_sub(1).filter(|_| end < doc.text.len()) {
        Some(open) => out.piece(&doc.text, open, end + 1),
        None => {
            out.byte(b'"');
            out.bytes(doc.raw_bytes(node));
            out.byte(b'"');
        }
    }
}

/// Objects up to this many members are sorted by insertion; larger ones by
/// the standard library's stable sort.
const SMALL_OBJECT: usize = 16;

/// Appends the key indexes of the object at `index` (with `count` members)
/// to `order`, sorted by decoded key bytes, keeping only the last of each
/// repeated key. `scratch` is reused between objects.
fn sorted_members(
    doc: &JsonDoc,
    index: usize,
    count: u32,
    order: &mut Vec<u32>,
    scratch: &mut Vec<(u64, u32)>,
) {
    scratch.clear();
    // Raw keys hold no byte below 0x20 (the parser refuses them), so a key
    // padded with zero bytes sorts like the key itself: the first eight
    // bytes, big-endian, decide most comparisons without touching the text.
    let mut member = index + 1;
    let mut escaped = false;
    for _ in 0..count {
        let Some(key) = doc.node(member) else {
            break;
        };
        escaped |= key.escaped();
        scratch.push((key_prefix(doc, key), super::tape_u32(member)));
        member = doc.skip(member + 1);
    }
    if escaped {
        // Sorted by the decoded keys instead; `scratch` is in source order,
        // so among keys that decode alike the last in the source wins.
        sorted_escaped_members(doc, scratch, order);
        return;
    }
    // By prefix, stable: equal prefixes stay in source order.
    if scratch.len() <= SMALL_OBJECT {
        // Insertion, shifting the larger ones up: machine-written JSON is
        // often sorted already (one comparison per member).
        for i in 1..scratch.len() {
            let entry = scratch[i];
            let mut at = i;
            while at > 0 && scratch[at - 1].0 > entry.0 {
                scratch[at] = scratch[at - 1];
                at -= 1;
            }
            scratch[at] = entry;
        }
    } else {
        // O(n log n) whatever the order: an object of 80 000 members in
        // reverse order must not cost 3 billion moves.
        scratch.sort_by_key(|&(prefix, _)| prefix);
    }
    if scratch.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        // Keys that share their first eight bytes, still in source order:
        // order them by the rest (a stable sort), then keep the last of
        // each repeated key.
        let rest = |key: u32| {
            doc.node(key as usize)
                .and_then(|n| doc.raw_bytes(n).get(8..))
                .unwrap_or_default()
        };
        scratch.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| rest(a.1).cmp(rest(b.1))));
        dedup_keep_last(scratch, |a, b| a.0 == b.0 && rest(a.1) == rest(b.1));
    }
    order.extend(scratch.iter().map(|&(_, key)| key));
}

/// The first eight bytes of the raw key `node`, zero-padded, as a
/// big-endian number.
fn key_prefix(doc: &JsonDoc, node: &Node) -> u64 {
    let (start, end) = node.span();
    let len = end - start;
    let bytes = &doc.text[..];
    // The key is followed by at least its closing quote, so an 8-byte read
    // from its start usually stays inside the text; mask off what is not
    // the key.
    if let Some(word) = bytes.get(start..start + 8) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        let word = u64::from_be_bytes(buf);
        return if len >= 8 {
            word
        } else {
            word & !(u64::MAX >> (8 * len))
        };
    }
    let mut prefix = 0u64;
    for i in 0..8 {
        let byte = if i < len {
            bytes.get(start + i).copied().unwrap_or(0)
        } else {
            0
        };
        prefix = (prefix << 8) | u64::from(byte);
    }
    prefix
}

/// [`sorted_members`] for an object with an escaped key: sorts by the
/// decoded keys.
fn sorted_escaped_members(doc: &JsonDoc, members: &[(u64, u32)], order: &mut Vec<u32>) {
    let mut keyed: Vec<(Cow<'_, str>, u32)> = members
        .iter()
        .map(|&(_, key)| {
            let text = doc
                .node(key as usize)
                .map_or(Cow::Borrowed(""), |n| doc.string(n));
            (text, key)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    dedup_keep_last(&mut keyed, |a, b| a.0 == b.0);
    order.extend(keyed.into_iter().map(|(_, key)| key));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree's document is exactly what parsing its compact text gives:
    /// the same text, the same tape, node for node.
    #[test]
    fn the_tape_of_a_tree_is_the_tape_of_its_text() {
        let limits = JsonLimits {
            max_depth: 512,
            max_len: 1 << 20,
        };
        let deep = format!("{}1{}", "[{\"k\":".repeat(200), "}]".repeat(200));
        for text in [
            "null",
            "[]",
            "{}",
            "[true,false,null,-0,1.50,1e400]",
            r#"{"b":1,"a":[],"b":{"c":{}},"":"","e\u0301":"\n\"\\\u0001é"}"#,
            r#"[[[]],[{}],{"a":[1,[2,{"b":[3]}]]},"x"]"#,
            &deep,
        ] {
            let value = super::super::parse(text, &limits).expect("valid JSON");
            let doc = JsonDoc::from_value(&value).expect("fits");
            let mut compact = String::new();
            write_compact(&mut compact, &value, None);
            let parsed = JsonDoc::parse(&compact, &limits).expect("compact text parses");
            assert_eq!(doc.text(), compact, "{text}");
            let bits = |d: &JsonDoc| -> Vec<(u32, u32)> {
                d.nodes.iter().map(|n| (n.kind_a, n.escaped_b)).collect()
            };
            assert_eq!(bits(&doc), bits(&parsed), "{text}");
        }
    }

    #[test]
    fn nodes_pack_into_eight_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 8);
        for kind in [
            NodeKind::Null,
            NodeKind::True,
            NodeKind::False,
            NodeKind::Number,
            NodeKind::String,
            NodeKind::Array,
            NodeKind::Object,
        ] {
            for escaped in [false, true] {
                for (a, b) in [(0, 0), (1, NODE_MAX), (NODE_MAX, 7), (12_345, 67_890)] {
                    let node = Node::new(kind, escaped, a, b);
                    assert_eq!(node.kind(), kind);
                    assert_eq!(node.escaped(), escaped);
                    assert_eq!((node.a(), node.b()), (a, b));
                }
            }
        }
        let mut open = Node::new(NodeKind::Object, false, 0, 1);
        open.close(3, 9);
        assert_eq!((open.kind(), open.a(), open.b()), (NodeKind::Object, 3, 9));
    }

    #[test]
    fn hashing_through_the_stack_buffer_matches_the_text() {
        // Longer than the buffer, with pieces that straddle its end.
        let long: String = (0..3000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let text = format!(r#"{{"b":"{long}","a":[{long:?},1,2],"c":"\u00e9"}}"#);
        let doc = JsonDoc::parse(&text, &JsonLimits::default()).expect("valid");
        assert_eq!(
            doc.sha256_canonical_hex(),
            super::super::sha256_hex(&doc.canonical_string())
        );
        // Past the per-thread buffer's size: streamed instead.
        let members: Vec<String> = (0..3000)
            .rev()
            .map(|i| format!(r#""k{i:05}": "{long:.20}{i}""#))
            .collect();
        let big = format!("{{{}}}", members.join(", "));
        assert!(big.len() > Scratch::KEEP_TEXT);
        let doc = JsonDoc::parse(&big, &JsonLimits::default()).expect("valid");
        let canonical = doc.canonical_string();
        assert!(canonical.starts_with(r#"{"k00000":"abcdefghijklmnopqrst0","#));
        assert_eq!(
            doc.sha256_canonical_hex(),
            super::super::sha256_hex(&canonical)
        );
        // And the small path still agrees after it.
        let small =
            JsonDoc::parse(r#"{"b":[1,2],"a":"x"}"#, &JsonLimits::default()).expect("valid");
        assert_eq!(
            small.sha256_canonical_hex(),
            super::super::sha256_hex(r#"{"a":"x","b":[1,2]}"#)
        );
    }
}
