//! RE2 syntax on Rust's `regex` engine. GitLab runs cleanup-policy patterns with RE2;
//! the `regex` crate's dialect is close but not the same, so a pattern is read here
//! with RE2's rules and written out in the `regex` crate's syntax:
//!
//! - accepted by RE2 but refused by `regex`: `\Q…\E` quoting, octal escapes (`\12`),
//!   a `{` that does not start a valid repetition (`v{,2}` is the literal `v{,2}`);
//! - read differently: `\d \s \w \b` are ASCII in RE2 (Unicode in `regex`); inside a
//!   class, `[`, `&&`, `--` and `~~` are plain characters in RE2 (nesting and set
//!   operations in `regex`); `\<` and `\>` are the characters `<` and `>` in RE2
//!   (word boundaries in `regex`);
//! - accepted by `regex` but refused by RE2: repeated repetition operators (`a**`,
//!   `a{2}{3}`), counts above 1,000, the `x`, `R` and `u` flags, escapes of letters,
//!   digits and `_` that RE2 does not know, `\C`.
//!
//! Anything else (groups, alternation, anchors, Unicode classes, flags `imsU`) has the
//! same syntax and meaning in both and is passed through for `regex` to check.

use std::fmt;

/// Largest repetition count RE2 accepts.
const MAX_REPEAT: u32 = 1000;

/// Why a pattern is not valid RE2, and where (a byte offset into the pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Re2Error {
    pub kind: Re2ErrorKind,
    pub message: String,
    pub offset: usize,
}

/// What kind of mistake, for explaining it in other words (the UI's languages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Re2ErrorKind {
    /// A counted repetition out of range (`{1001}`, `{3,2}`).
    Repetition,
    /// A repetition operator right after another (`a**`, `a{2}{3}`).
    RepetitionTwice,
    RepetitionMissing,
    Escape,
    Class,
    ClassUnclosed,
    Group,
    GroupUnclosed,
    Lookaround,
    Flag,
    /// Found by the `regex` crate's parser after translation (an unclosed group, say).
    Syntax,
    /// Valid, but too large for the engine once compiled.
    TooBig,
}

impl fmt::Display for Re2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

/// A pattern in the `regex` crate's syntax, with where each of its bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub pattern: String,
    /// For each byte of `pattern`, the byte offset in the RE2 pattern it came from.
    origin: Vec<usize>,
}

impl Translated {
    /// The offset in the RE2 pattern of byte `at` of the translation (for errors the
    /// `regex` crate reports against the translation).
    pub fn original_offset(&self, at: usize) -> usize {
        self.origin
            .get(at)
            .or(self.origin.last())
            .copied()
            .unwrap_or(0)
    }
}

struct Writer {
    out: String,
    origin: Vec<usize>,
}

impl Writer {
    fn push(&mut self, s: &str, from: usize) {
        self.out.push_str(s);
        self.origin.extend(std::iter::repeat_n(from, s.len()));
    }

    /// A literal character, escaped when the `regex` crate would read it otherwise
    /// (inside a class that includes `&`, `-` and `~`, its set operators).
    fn literal(&mut self, c: char, from: usize, in_class: bool) {
        let special = if in_class {
            regex_syntax::is_meta_character(c)
        } else {
            r"\.+*?()|[]{}^$".contains(c)
        };
        if special {
            self.push("\\", from);
        }
        let mut buf = [0u8; 4];
        self.push(c.encode_utf8(&mut buf), from);
    }
}

/// What the scanner last emitted outside a class, for RE2's repetition rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Start of the pattern, after `(` or `|`: nothing to repeat.
    Nothing,
    /// Something a repetition may follow.
    Item,
    /// A repetition operator (another one may not follow, but `?` for laziness may).
    Repeat,
    /// A repetition made lazy with `?`.
    LazyRepeat,
}

fn err(kind: Re2ErrorKind, message: impl Into<String>, offset: usize) -> Re2Error {
    Re2Error {
        kind,
        message: message.into(),
        offset,
    }
}

/// Read `pattern` as RE2 and write it in the `regex` crate's syntax.
pub fn translate(pattern: &str) -> Result<Translated, Re2Error> {
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut w = Writer {
        out: String::with_capacity(pattern.len() + 8),
        origin: Vec::with_capacity(pattern.len() + 8),
    };
    let mut last = Last::Nothing;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            '\\' => {
                i = escape(&chars, i, &mut w, false)?;
                // RE2, like `regex`, lets an assertion be repeated, if uselessly.
                last = Last::Item;
                continue;
            }
            '[' => {
                i = class(&chars, i, &mut w)?;
                last = Last::Item;
                continue;
            }
            '(' => {
                i = group_open(&chars, i, &mut w)?;
                last = Last::Nothing;
                continue;
            }
            '*' | '+' | '?' => match last {
                Last::Nothing => {
                    return Err(err(
                        Re2ErrorKind::RepetitionMissing,
                        format!("missing argument to repetition operator: {c}"),
                        at,
                    ))
                }
                Last::Repeat if c == '?' => {
                    w.push("?", at);
                    last = Last::LazyRepeat;
                }
                Last::Repeat | Last::LazyRepeat => {
                    return Err(err(
                        Re2ErrorKind::RepetitionTwice,
                        format!("bad repetition operator: {c}"),
                        at,
                    ))
                }
                Last::Item => {
                    w.push(&c.to_string(), at);
                    last = Last::Repeat;
                }
            },
            '{' => match repetition(&chars, i) {
                Some((end, min, max)) => {
                    if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
                        return Err(err(
                            Re2ErrorKind::Repetition,
                            format!("bad repetition operator: counts go up to {MAX_REPEAT}"),
                            at,
                        ));
                    }
                    if max.is_some_and(|m| m < min) {
                        return Err(err(
                            Re2ErrorKind::Repetition,
                            "bad repetition operator: the range is reversed",
                            at,
                        ));
                    }
                    match last {
                        Last::Nothing => {
                            return Err(err(
                                Re2ErrorKind::RepetitionMissing,
                                "missing argument to repetition operator",
                                at,
                            ))
                        }
                        Last::Repeat | Last::LazyRepeat => {
                            return Err(err(
                                Re2ErrorKind::RepetitionTwice,
                                "bad repetition operator: a repetition of a repetition",
                                at,
                            ))
                        }
                        Last::Item => {}
                    }
                    let text: String = chars[i..end].iter().map(|&(_, c)| c).collect();
                    w.push(&text, at);
                    last = Last::Repeat;
                    i = end;
                    continue;
                }
                // Not a repetition: RE2 reads the brace as itself.
                None => {
                    w.literal('{', at, false);
                    last = Last::Item;
                }
            },
            '}' => {
                w.literal('}', at, false);
                last = Last::Item;
            }
            ')' => {
                w.push(")", at);
                last = Last::Item;
            }
            '|' => {
                w.push("|", at);
                last = Last::Nothing;
            }
            '^' | '$' => {
                w.push(&c.to_string(), at);
                last = Last::Item;
            }
            _ => {
                // `.` and ordinary characters (white space included: RE2 has no
                // verbose mode).
                if c == '.' {
                    w.push(".", at);
                } else {
                    w.literal(c, at, false);
                }
                last = Last::Item;
            }
        }
        i += 1;
    }
    Ok(Translated {
        pattern: w.out,
        origin: w.origin,
    })
}

/// `{n}`, `{n,}` or `{n,m}` starting at `i`: the index after it and the counts.
fn repetition(chars: &[(usize, char)], i: usize) -> Option<(usize, u32, Option<u32>)> {
    let mut j = i + 1;
    let digits = |j: &mut usize| -> Option<u32> {
        let start = *j;
        while *j < chars.len() && chars[*j].1.is_ascii_digit() {
            *j += 1;
        }
        if *j == start {
            return None;
        }
        let s: String = chars[start..*j].iter().map(|&(_, c)| c).collect();
        // Absurd counts still parse, to be refused as too large.
        Some(s.parse::<u32>().unwrap_or(u32::MAX))
    };
    let min = digits(&mut j)?;
    let max = match chars.get(j)?.1 {
        '}' => Some(min),
        ',' => {
            j += 1;
            if chars.get(j)?.1 == '}' {
                None
            } else {
                digits(&mut j)?.into()
            }
        }
        _ => return None,
    };
    if chars.get(j)?.1 != '}' {
        return None;
    }
    Some((j + 1, min, max))
}

/// The escape at `i` (a backslash), written out; the index after it.
fn escape(
    chars: &[(usize, char)],
    i: usize,
    w: &mut Writer,
    in_class: bool,
) -> Result<usize, Re2Error> {
    let at = chars[i].0;
    let Some(&(_, c)) = chars.get(i + 1) else {
        return Err(err(
            Re2ErrorKind::Escape,
            "trailing backslash at end of expression",
            at,
        ));
    };
    let atom = Ok;
    match c {
        'Q' if !in_class => {
            // Everything up to `\E` (or the end) is literal.
            let mut j = i + 2;
            while j < chars.len() {
                if chars[j].1 == '\\' && chars.get(j + 1).is_some_and(|&(_, c)| c == 'E') {
                    return atom(j + 2);
                }
                w.literal(chars[j].1, chars[j].0, false);
                j += 1;
            }
            atom(j)
        }
        'E' if !in_class => atom(i + 2), // a stray `\E` ends nothing: RE2 ignores it
        'a' => {
            w.push(r"\x07", at);
            atom(i + 2)
        }
        'f' | 't' | 'n' | 'r' | 'v' => {
            w.push(&format!("\\{c}"), at);
            atom(i + 2)
        }
        '0'..='7' => {
            // Octal: `\0` and up to two more digits, or `\1`–`\7` followed by at least
            // one more (a lone `\1` would be a backreference, which RE2 refuses).
            let mut j = i + 2;
            while j < chars.len() && j < i + 4 && ('0'..='7').contains(&chars[j].1) {
                j += 1;
            }
            if c != '0' && j == i + 2 {
                return Err(err(
                    Re2ErrorKind::Escape,
                    format!("invalid escape sequence: \\{c} (backreferences are not supported)"),
                    at,
                ));
            }
            let digits: String = chars[i + 1..j].iter().map(|&(_, c)| c).collect();
            let code = u32::from_str_radix(&digits, 8).unwrap_or(0);
            w.push(&format!("\\x{{{code:X}}}"), at);
            atom(j)
        }
        'x' => {
            // `\x41` or `\x{10FFFF}`: the same in both.
            atom(pass_through(chars, i, 2, w))
        }
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
            // ASCII in RE2.
            let (set, negated) = match c {
                'd' => ("0-9", false),
                'D' => ("0-9", true),
                's' => (r"\t\n\x0C\r ", false),
                'S' => (r"\t\n\x0C\r ", true),
                'w' => ("0-9A-Za-z_", false),
                _ => ("0-9A-Za-z_", true),
            };
            let text = match (negated, in_class) {
                (false, true) => set.to_string(),
                (true, _) => format!("[^{set}]"),
                (false, false) => format!("[{set}]"),
            };
            w.push(&text, at);
            atom(i + 2)
        }
        'p' | 'P' => {
            // `\pN`, `\p{Greek}`, `\p{^Greek}`: the same in both.
            atom(pass_through(chars, i, 1, w))
        }
        'b' | 'B' if !in_class => {
            // ASCII word boundaries in RE2.
            w.push(&format!("(?-u:\\{c})"), at);
            atom(i + 2)
        }
        'A' | 'z' if !in_class => {
            w.push(&format!("\\{c}"), at);
            atom(i + 2)
        }
        'C' => Err(err(
            Re2ErrorKind::Escape,
            r"invalid escape sequence: \C (any byte) is not supported",
            at,
        )),
        c if c.is_ascii_punctuation() && c != '_' => {
            // Escaped punctuation is always the character itself (`\<` included).
            w.literal(c, at, in_class);
            atom(i + 2)
        }
        c => Err(err(
            Re2ErrorKind::Escape,
            format!("invalid escape sequence: \\{c}"),
            at,
        )),
    }
}

/// Copy the escape at `i` as it is: its letter, then a `{…}` argument or `short`
/// characters. The index after it.
fn pass_through(chars: &[(usize, char)], i: usize, short: usize, w: &mut Writer) -> usize {
    let mut j = i + 2;
    if chars.get(j).is_some_and(|&(_, c)| c == '{') {
        while j < chars.len() && chars[j].1 != '}' {
            j += 1;
        }
        j += 1;
    } else {
        j += short;
    }
    let j = j.min(chars.len());
    let text: String = chars[i..j].iter().map(|&(_, c)| c).collect();
    w.push(&text, chars[i].0);
    j
}

/// The character class at `i` (a `[`), written out; the index after it.
fn class(chars: &[(usize, char)], i: usize, w: &mut Writer) -> Result<usize, Re2Error> {
    let open = chars[i].0;
    let mut j = i + 1;
    w.push("[", open);
    if chars.get(j).is_some_and(|&(_, c)| c == '^') {
        w.push("^", chars[j].0);
        j += 1;
    }
    let mut first = true;
    loop {
        let Some(&(at, c)) = chars.get(j) else {
            return Err(err(Re2ErrorKind::ClassUnclosed, "missing closing ]", open));
        };
        if c == ']' && !first {
            w.push("]", at);
            return Ok(j + 1);
        }
        first = false;
        // `[:alpha:]` and `[:^alpha:]`: the same in both.
        if c == '[' && chars.get(j + 1).is_some_and(|&(_, c)| c == ':') {
            if let Some(end) = (j + 2..chars.len().saturating_sub(1))
                .find(|&k| chars[k].1 == ':' && chars[k + 1].1 == ']')
            {
                let text: String = chars[j..end + 2].iter().map(|&(_, c)| c).collect();
                w.push(&text, at);
                j = end + 2;
                continue;
            }
        }
        // One character (or escape), possibly the start of a range `a-z`.
        let start_j = j;
        let lo = class_char(chars, &mut j, w)?;
        let is_range = chars.get(j).is_some_and(|&(_, c)| c == '-')
            && chars.get(j + 1).is_some_and(|&(_, c)| c != ']');
        if is_range {
            let Some(lo) = lo else {
                return Err(err(
                    Re2ErrorKind::Class,
                    "invalid character class range",
                    chars[start_j].0,
                ));
            };
            w.push("-", chars[j].0);
            j += 1;
            let hi_at = chars[j].0;
            let Some(hi) = class_char(chars, &mut j, w)? else {
                return Err(err(
                    Re2ErrorKind::Class,
                    "invalid character class range",
                    hi_at,
                ));
            };
            if hi < lo {
                return Err(err(
                    Re2ErrorKind::Class,
                    format!("invalid character class range: {lo}-{hi}"),
                    chars[start_j].0,
                ));
            }
        }
    }
}

/// One member of a class at `*j`, written out. Returns the character when it is a
/// single character (a possible range end), `None` for a set such as `\d`.
fn class_char(
    chars: &[(usize, char)],
    j: &mut usize,
    w: &mut Writer,
) -> Result<Option<char>, Re2Error> {
    let (at, c) = chars[*j];
    if c != '\\' {
        // `[`, `&`, `-`, `~` and the rest are plain characters inside an RE2 class.
        w.literal(c, at, true);
        *j += 1;
        return Ok(Some(c));
    }
    let before = w.out.len();
    let next = escape(chars, *j, w, true)?;
    let single = match chars.get(*j + 1).map(|&(_, c)| c) {
        Some('d' | 'D' | 's' | 'S' | 'w' | 'W' | 'p' | 'P') => None,
        Some('x' | '0'..='7' | 'a' | 'f' | 't' | 'n' | 'r' | 'v') => {
            // The character the escape names, for range checks.
            let text = &w.out[before..];
            decode_single(text)
        }
        Some(other) => Some(other),
        None => None,
    };
    *j = next;
    Ok(single)
}

/// The character a written single-character escape stands for.
fn decode_single(text: &str) -> Option<char> {
    match text {
        r"\t" => Some('\t'),
        r"\n" => Some('\n'),
        r"\r" => Some('\r'),
        r"\f" => Some('\x0C'),
        r"\v" => Some('\x0B'),
        _ => {
            let hex = text.strip_prefix(r"\x")?;
            let hex = hex.trim_start_matches('{').trim_end_matches('}');
            char::from_u32(u32::from_str_radix(hex, 16).ok()?)
        }
    }
}

/// The group opening at `i` (a `(`), written out; the index after its opening part.
fn group_open(chars: &[(usize, char)], i: usize, w: &mut Writer) -> Result<usize, Re2Error> {
    let at = chars[i].0;
    if chars.get(i + 1).map(|&(_, c)| c) != Some('?') {
        w.push("(", at);
        return Ok(i + 1);
    }
    let rest: String = chars[i + 2..].iter().take(3).map(|&(_, c)| c).collect();
    if rest.starts_with("P<")
        || (rest.starts_with('<') && !rest.starts_with("<=") && !rest.starts_with("<!"))
    {
        // A named group; `regex` checks the name.
        let lt = if rest.starts_with("P<") { i + 3 } else { i + 2 };
        let Some(gt) = (lt..chars.len()).find(|&k| chars[k].1 == '>') else {
            return Err(err(Re2ErrorKind::Group, "invalid named capture group", at));
        };
        let text: String = chars[i..=gt].iter().map(|&(_, c)| c).collect();
        w.push(&text, at);
        return Ok(gt + 1);
    }
    // Flags: `(?i)`, `(?i-s:`, `(?:`.
    let mut j = i + 2;
    let mut text = String::from("(?");
    loop {
        let Some(&(fat, f)) = chars.get(j) else {
            return Err(err(Re2ErrorKind::GroupUnclosed, "missing closing )", at));
        };
        match f {
            'i' | 'm' | 's' | 'U' | '-' => text.push(f),
            ':' | ')' => {
                text.push(f);
                w.push(&text, at);
                return Ok(j + 1);
            }
            '=' | '!' | '<' => {
                return Err(err(
                    Re2ErrorKind::Lookaround,
                    "invalid or unsupported Perl syntax: lookaround",
                    at,
                ))
            }
            other => {
                return Err(err(
                    Re2ErrorKind::Flag,
                    format!("invalid or unsupported Perl syntax: the flag {other:?}"),
                    fat,
                ))
            }
        }
        j += 1;
    }
}

/// Compile an RE2 pattern with the `regex` crate; `anchored` wraps it in `\A(?:…)\z`,
/// as GitLab anchors cleanup patterns. Errors point into the RE2 pattern.
pub fn compile(pattern: &str, anchored: bool) -> Result<regex::Regex, Re2Error> {
    let t = translate(pattern)?;
    // The pattern alone first: it must stand on its own, so that a stray `)` cannot
    // close the anchoring group and escape it (`a)|(b`), and errors point at it.
    if let Err(e) = regex_syntax::Parser::new().parse(&t.pattern) {
        let (message, at) = match &e {
            regex_syntax::Error::Parse(e) => (e.kind().to_string(), e.span().start.offset),
            regex_syntax::Error::Translate(e) => (e.kind().to_string(), e.span().start.offset),
            _ => (e.to_string(), 0),
        };
        return Err(err(Re2ErrorKind::Syntax, message, t.original_offset(at)));
    }
    let text = if anchored {
        format!(r"\A(?:{})\z", t.pattern)
    } else {
        t.pattern.clone()
    };
    regex::Regex::new(&text).map_err(|e| {
        let message = match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("the pattern is too large once compiled (over {limit} bytes)")
            }
            other => other.to_string(),
        };
        err(Re2ErrorKind::TooBig, message, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(pattern: &str, text: &str) -> bool {
        let t = translate(pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        regex::Regex::new(&format!(r"\A(?:{})\z", t.pattern))
            .unwrap_or_else(|e| panic!("{pattern:?} -> {:?}: {e}", t.pattern))
            .is_match(text)
    }

    /// RE2's syntax, case by case: (pattern, text, whether the whole text matches).
    #[test]
    fn re2_syntax_table() {
        let cases: &[(&str, &str, bool)] = &[
            // Plain patterns mean the same in both.
            (r"v\d+\.\d+", "v1.20", true),
            (r".*", "anything", true),
            (r"(?i)LATEST", "latest", true),
            (r"main|release-.*", "release-1", true),
            (r"a{2,3}", "aaa", true),
            (r"a{2,}", "aaaa", true),
            (r"a{2}", "aaa", false),
            (r"[[:alpha:]]+", "abc", true),
            (r"[[:^digit:]]+", "abc", true),
            (r"\pL+", "héllo", true),
            (r"(?P<v>v)\d", "v1", true),
            (r"(?<v>v)\d", "v1", true),
            (r"x*?y", "xxy", true),
            (r"[]a]+", "]a", true),
            (r"[^]a]", "b", true),
            (r"[a-]+", "a-", true),
            // \Q…\E quotes.
            (r"\Qv1.0\E", "v1.0", true),
            (r"\Qv1.0\E", "v1x0", false),
            (r"\Qa+b", "a+b", true),
            (r"x\Q*\E+", "x**", true),
            // A brace that starts no repetition is itself.
            (r"v{,2}", "v{,2}", true),
            (r"v{,2}", "vv", false),
            (r"a{x}", "a{x}", true),
            (r"a{1", "a{1", true),
            (r"}", "}", true),
            // Octal escapes.
            (r"\101", "A", true),
            (r"\0", "\0", true),
            (r"\12", "\n", true),
            // ASCII classes and boundaries.
            (r"\d", "٣", false),
            (r"\w+", "héllo", false),
            (r"\s", "\u{a0}", false),
            (r"\s", "\x0B", false),
            (r"[\d.]+", "1.2", true),
            (r"[\D]", "x", true),
            (r"\bv1\b", "v1", true),
            // Inside an RE2 class `[`, `&&`, `--` and `~~` are characters.
            (r"[a-z&&[^v]]+", "a&&[^v]", false),
            (r"[a-z&&[^v]]+", "ab]", false),
            (r"[a-z&&[^v]+", "v&[^", true),
            (r"[a-z&&[^v]]+", "v]]", true),
            (r"[a-z&&[^v]]+", "&]", true),
            (r"[a-c--b]+", "a-b", true),
            (r"[~~x]+", "~x", true),
            // Escaped punctuation is the character: `\<` is `<`, not a word start.
            (r"\<v", "<v", true),
            (r"\<v", "v", false),
            (r"a\>", "a>", true),
            (r"\%\-\#", "%-#", true),
            // White space is literal: no verbose mode.
            (r"a b", "a b", true),
        ];
        for &(pattern, text, want) in cases {
            assert_eq!(is_match(pattern, text), want, "{pattern:?} on {text:?}");
        }
    }

    /// Accepted by the `regex` crate, refused by RE2.
    #[test]
    fn rust_only_syntax_is_refused() {
        for (pattern, at) in [
            (r"a**", 2),
            (r"a*+", 2),
            (r"a+*", 2),
            (r"a{2}{3}", 4),
            (r"a{1001}", 1),
            (r"a{3,2}", 1),
            (r"*a", 0),
            (r"(?x)a b", 2),
            (r"(?R)a", 2),
            (r"(?u)a", 2),
            (r"\_", 0),
            (r"\e", 0),
            (r"\Z", 0),
            (r"\C", 0),
            (r"\1", 0),
            (r"(?=a)", 0),
            (r"(?<=a)b", 0),
            (r"ab\", 2),
            (r"[a", 0),
            (r"[z-a]", 1),
        ] {
            let e = translate(pattern).expect_err(pattern);
            assert_eq!(e.offset, at, "{pattern:?}: {e}");
        }
    }

    #[test]
    fn a_stray_parenthesis_cannot_escape_the_anchors() {
        assert!(compile("a)|(b", true).is_err());
        assert!(compile("(a", true).is_err());
        let re = compile("a|b", true).unwrap();
        assert!(re.is_match("a") && !re.is_match("ab"));
    }

    #[test]
    fn errors_from_regex_map_back_to_the_pattern() {
        // `\Q(\E` is quoted, so the unclosed group is the second `(`, at byte 5.
        let t = translate(r"\Q(\E(ab").unwrap();
        let e = regex_syntax::Parser::new().parse(&t.pattern).unwrap_err();
        let regex_syntax::Error::Parse(e) = e else {
            panic!("{e}")
        };
        assert_eq!(t.original_offset(e.span().start.offset), 5);
    }

    #[test]
    fn translations() {
        for (re2, rust) in [
            (r"[a-z&&[^v]]+", r"[a-z\&\&\[\^v]\]+"),
            (r"\Qv1.0\E", r"v1\.0"),
            (r"v{,2}", r"v\{,2\}"),
            (r"\d+", r"[0-9]+"),
            (r"\<a", r"<a"),
            (r"\101", r"\x{41}"),
        ] {
            assert_eq!(translate(re2).unwrap().pattern, rust, "{re2}");
        }
    }

    /// Ordinary patterns come out unchanged, so policies saved before keep their text.
    #[test]
    fn ordinary_patterns_are_unchanged() {
        for p in [r".*", r"v.+", r"(?:main|stable)-[0-9a-f]{7}", r"release-.*"] {
            assert_eq!(translate(p).unwrap().pattern, p);
        }
    }
}
