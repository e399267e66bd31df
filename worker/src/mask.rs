//! Masking secret values as `***`, in whole strings and in streams.
//!
//! The master masks what it stores and logs; the agent masks a task's captured stdout
//! and stderr with the values the task was given, as CI systems mask secrets in job
//! logs. Each value is masked line by line (a multi-line value, e.g. a PEM key, is a
//! needle per line), together with the forms JSON and Rust's `Debug` escape it to, so
//! that a value quoted into an error message or a record is caught too. Matching is
//! leftmost-longest, and a stream holds back only a tail that could still begin a value,
//! so a match split across two reads is still masked while ordinary output is never
//! delayed.
//!
//! Why not `aho-corasick`'s stream replacement: it supports only its `Standard` match
//! semantics (a shorter value inside a longer one would leave the longer one's edges
//! visible) and holds back the last longest-needle bytes of every read, even when they
//! cannot begin a value; a run holds a handful of values, so a plain scan suffices.

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// The shortest secret value accepted: shorter ones would mask ordinary text.
pub const MIN_SECRET_LEN: usize = 4;

/// The byte strings to mask, longest first. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Masks {
    needles: Vec<Vec<u8>>,
    /// For each byte, the needles (indices, longest first) that begin with it: a long
    /// key's hundreds of lines cost a handful of comparisons per byte, not hundreds.
    by_first: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masks({} needle(s))", self.needles.len())
    }
}

impl Masks {
    /// The needles for `values`: each line (of at least [`MIN_SECRET_LEN`] bytes, a
    /// trailing `\r` dropped) and its JSON- and `Debug`-escaped forms.
    pub fn new<I, S>(values: I) -> Masks
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for value in values {
            for line in value.as_ref().split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.len() < MIN_SECRET_LEN {
                    continue;
                }
                let json = serde_json::to_string(line).unwrap_or_default();
                let debug = format!("{line:?}");
                for form in [
                    line,
                    json.get(1..json.len().saturating_sub(1)).unwrap_or(""),
                    debug.get(1..debug.len().saturating_sub(1)).unwrap_or(""),
                ] {
                    if form.len() >= MIN_SECRET_LEN {
                        needles.push(form.as_bytes().to_vec());
                    }
                }
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let mut by_first = vec![Vec::new(); 256];
        for (i, n) in needles.iter().enumerate() {
            by_first[usize::from(n[0])].push(i);
        }
        Masks { needles, by_first }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Whether `text` holds a needle.
    pub fn hits(&self, text: &[u8]) -> bool {
        matches!(self.mask_bytes(text), Cow::Owned(_))
    }

    /// `text` with every needle replaced by [`MASK`].
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Needles are whole UTF-8 strings, so what is left around them still is.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// `bytes` with every needle replaced by [`MASK`].
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::new();
        let (done, _) = self.scan(bytes, true, &mut out);
        debug_assert_eq!(done, bytes.len());
        if out.len() == bytes.len() && out == bytes {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(out)
        }
    }

    /// Every string of `value` (keys included) masked, in place.
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask(s) {
                    *s = m;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.mask_json(&mut v);
                    map.insert(self.mask(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// Every string value of `value` masked, in place; object keys are left as they are.
    pub fn mask_json_values(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask(s) {
                    *s = m;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json_values(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.mask_json_values(v)),
            _ => {}
        }
    }

    /// A masker for one stream.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            masks: self.clone(),
            held: Vec::new(),
        }
    }

    /// Masks `bytes` into `out` up to where a needle could still begin (unless `end`);
    /// returns how many bytes were consumed and whether a needle was replaced.
    fn scan(&self, bytes: &[u8], end: bool, out: &mut Vec<u8>) -> (usize, bool) {
        if self.needles.is_empty() {
            out.extend_from_slice(bytes);
            return (bytes.len(), false);
        }
        let mut i = 0;
        let mut hit = false;
        while i < bytes.len() {
            // Bulk-copy up to the next byte that may begin a needle.
            let next = bytes[i..]
                .iter()
                .position(|b| !self.by_first[usize::from(*b)].is_empty())
                .map_or(bytes.len(), |p| i + p);
            out.extend_from_slice(&bytes[i..next]);
            i = next;
            if i == bytes.len() {
                break;
            }
            let rest = &bytes[i..];
            // Longest first: a longer needle that may still match wins over a shorter
            // one that does.
            let mut decided = false;
            for n in self.by_first[usize::from(bytes[i])]
                .iter()
                .map(|&k| &self.needles[k])
            {
                if rest.len() < n.len() {
                    if !end && n.starts_with(rest) {
                        return (i, hit);
                    }
                } else if rest.starts_with(n) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += n.len();
                    hit = true;
                    decided = true;
                    break;
                }
            }
            if !decided {
                out.push(bytes[i]);
                i += 1;
            }
        }
        (i, hit)
    }
}

/// Masks one stream read in chunks: a needle split between two chunks is still
/// masked. Only a tail that could begin a needle is held back until the next chunk (or
/// [`StreamMasker::finish`]).
#[derive(Debug, Clone)]
pub struct StreamMasker {
    masks: Masks,
    held: Vec<u8>,
}

impl StreamMasker {
    /// Masks `chunk` (after what was held back) into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let (done, _) = self.masks.scan(&buf, false, out);
        self.held = buf.split_off(done);
    }

    /// The end of the stream: whatever was held back, masked.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.masks.scan(&held, true, out);
    }

    /// How many bytes are held back now (at most the longest needle's length - 1).
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(m: &Masks, s: &str) -> String {
        m.mask(s).into_owned()
    }

    #[test]
    fn whole_strings_are_masked_leftmost_longest() {
        let m = Masks::new(["hunter22", "hunter2233"]);
        assert_eq!(masked(&m, "pw=hunter2233!"), "pw=***!");
        assert_eq!(masked(&m, "pw=hunter22 and hunter22"), "pw=*** and ***");
        assert_eq!(masked(&m, "nothing here"), "nothing here");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
        assert!(m.hits(b"xhunter22x") && !m.hits(b"hunter2"));
    }

    #[test]
    fn short_lines_are_not_needles_and_multi_line_values_mask_line_by_line() {
        let key = "-----BEGIN KEY-----\r\nMIIEabcdef\n==\n-----END KEY-----\n";
        let m = Masks::new([key, "abc"]);
        assert_eq!(
            masked(&m, "-----BEGIN KEY-----\nMIIEabcdef\n==\n-----END KEY-----"),
            "***\n***\n==\n***"
        );
        assert_eq!(
            masked(&m, "abc abcd"),
            "abc abcd",
            "a 3-byte value masks nothing"
        );
    }

    #[test]
    fn escaped_forms_are_masked_too() {
        let m = Masks::new(["a\"b\\c\td"]);
        let json = serde_json::to_string(&serde_json::json!({ "e": "x a\"b\\c\td y" })).unwrap();
        assert_eq!(json, r#"{"e":"x a\"b\\c\td y"}"#);
        assert_eq!(masked(&m, &json), r#"{"e":"x *** y"}"#);
        let debug = format!("{:?}", "x a\"b\\c\td y");
        assert_eq!(masked(&m, &debug), "\"x *** y\"");
    }

    #[test]
    fn json_values_are_masked_in_every_string_and_key() {
        let m = Masks::new(["s3cr3t"]);
        let mut v = serde_json::json!({"a": ["x s3cr3t", 1, {"s3cr3t": "ok"}], "b": true});
        m.mask_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x ***", 1, {"***": "ok"}], "b": true})
        );
    }

    #[test]
    fn a_stream_masks_across_every_chunk_boundary_and_holds_back_only_a_possible_start() {
        let m = Masks::new(["topsecret", "tops3cret-longer"]);
        let text = b"line one topsecret\nand tops3cret-longer then tops and topsecre";
        let want = m.mask_bytes(text).into_owned();
        assert_eq!(
            String::from_utf8_lossy(&want),
            "line one ***\nand *** then tops and topsecre"
        );
        // Every split point, and byte-by-byte.
        for cut in 0..=text.len() {
            let mut s = m.stream();
            let mut out = Vec::new();
            s.feed(&text[..cut], &mut out);
            s.feed(&text[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, want, "cut at {cut}");
        }
        let mut s = m.stream();
        let mut out = Vec::new();
        for b in text {
            s.feed(std::slice::from_ref(b), &mut out);
            assert!(s.held() < "tops3cret-longer".len());
        }
        s.finish(&mut out);
        assert_eq!(out, want);
        // Output that cannot begin a value is passed on at once.
        let mut s = m.stream();
        let mut out = Vec::new();
        s.feed(b"progress 50%\n", &mut out);
        assert_eq!(out, b"progress 50%\n");
        assert_eq!(s.held(), 0);
    }
}
