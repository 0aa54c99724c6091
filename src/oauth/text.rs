//! Text a client chooses and a person reads (a client's name on the consent page). Invisible
//! characters would let it pass for another: bidirectional controls reorder what is shown
//! ("moc.elgoog" displayed as "google.com"), zero-width ones hide inside a trusted name.

/// Unicode general category Cf (format characters), Unicode 15.1: bidi embeddings, overrides and
/// isolates, zero-width spaces and joiners, the BOM, soft hyphen, invisible operators, tags.
const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is a format character (category Cf).
pub(crate) fn is_format(c: char) -> bool {
    FORMAT_CHARACTERS
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&c))
}

/// A character that shows nothing or changes how the rest is shown: controls (Cc), format
/// characters (Cf), and the line and paragraph separators (Zl, Zp).
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A request value as it may appear in a log line: attacker-chosen text is cut short.
pub(crate) fn for_log(value: &str) -> &str {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value;
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_zero_width_and_control_characters_are_invisible() {
        for c in [
            '\u{202E}',  // right-to-left override
            '\u{2066}',  // left-to-right isolate
            '\u{200B}',  // zero-width space
            '\u{200D}',  // zero-width joiner
            '\u{FEFF}',  // byte order mark
            '\u{00AD}',  // soft hyphen
            '\u{E0041}', // tag latin capital A
            '\u{2028}',  // line separator
            '\n',
            '\u{7}',
            '\u{9F}',
        ] {
            assert!(is_invisible(c), "{:?}", c);
        }
        for c in ['a', 'é', 'Ж', '日', ' ', '-', '\u{1F600}'] {
            assert!(!is_invisible(c), "{:?}", c);
        }
    }
}
