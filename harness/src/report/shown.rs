//! Text a server sent, made fit to show: control characters as visible
//! escapes (a NUL, an ESC or a lone CR would otherwise be copied into the
//! page unseen, or reinterpreted by whoever copies it out), and long text
//! folded, with how much was left out. Escaping for HTML is the template's
//! (maud escapes every value); this only decides what text is shown.

use std::borrow::Cow;

/// `s` with every control character but tab and line feed written as a
/// visible escape (`\x1b`, `\r`, `\u{85}`); a CRLF ends a line as LF does.
pub fn visible(s: &str) -> Cow<'_, str> {
    let shown = |c: char| c == '\t' || c == '\n' || !c.is_control();
    if s.chars().all(shown) && !s.contains('\r') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => out.push_str("\\r"),
            c if shown(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// At most `max` bytes of `s` (cut at a character boundary), and how many
/// bytes were left out.
pub fn folded(s: &str, max: usize) -> (&str, usize) {
    if s.len() <= max {
        return (s, 0);
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    (&s[..cut], s.len() - cut)
}

/// A message's bytes as text fit to show: invalid UTF-8 as U+FFFD, control
/// characters visible, folded at `max` bytes with a line saying how many
/// more the `.sip.txt` file holds.
pub fn message_text(raw: &[u8], max: usize, whole: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    let (head, left) = folded(&text, max);
    let mut out = visible(head).into_owned();
    if left > 0 {
        out.push_str(&format!("\n… {left} bytes more, in {whole}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_show_as_escapes_and_lines_stay_lines() {
        assert_eq!(visible("plain\ttext\n"), "plain\ttext\n");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(
            visible("a\r\nb\rc\0d\x1b[31m\u{85}"),
            "a\nb\\rc\\x00d\\x1b[31m\\u{85}"
        );
    }

    #[test]
    fn long_text_is_folded_at_a_character_boundary() {
        assert_eq!(folded("héllo", 2), ("h", 5));
        assert_eq!(folded("short", 10), ("short", 0));
        let shown = message_text(&[b'x'; 100], 10, "c.sip.txt");
        assert_eq!(shown, "xxxxxxxxxx\n… 90 bytes more, in c.sip.txt");
        assert_eq!(message_text(b"\xff\xfeA", 10, "f"), "\u{fffd}\u{fffd}A");
    }
}
