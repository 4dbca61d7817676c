//! What a display name or a title may hold: no control characters, no
//! direction overrides, nothing that shows as nothing (one name must not be
//! able to pass for another). Re-exported from `protocol`, where names
//! travel.

/// Display names: 1–100 characters, at least one of them one that shows
/// (not blank, a joiner or a selector), none of them a control character, a
/// direction override or an invisible character ([`is_hidden_control`]).
pub fn valid_name(n: &str) -> bool {
    n.chars().count() <= 100 && shows(n) && !n.chars().any(is_hidden_control)
}

/// Whether `s` has a character that is seen: not white space, not a zero
/// width (non-)joiner, not a variation selector, not the blank Braille
/// pattern.
pub fn shows(s: &str) -> bool {
    s.chars().any(|c| {
        !c.is_whitespace()
            && !matches!(
                c,
                '\u{200C}'
                    | '\u{200D}'
                    | '\u{2800}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{E0100}'..='\u{E01EF}'
            )
    })
}

/// Characters that let one name or title pass for another: controls
/// (C0, C1); the bidirectional embeddings, overrides, isolates and marks
/// (U+061C, U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), which reorder
/// what is shown; and characters that show as nothing (zero width space,
/// word joiner and invisible operators, the BOM, soft hyphen, combining
/// grapheme joiner, Hangul fillers, Mongolian vowel separator, tag
/// characters, interlinear annotation and deprecated format characters,
/// musical-notation formatting, the line and paragraph separators).
/// Zero width (non-)joiners and variation selectors stay: scripts and emoji
/// need them.
pub fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_overrides_and_invisible_characters_but_keep_scripts() {
        for ok in [
            "Alice",
            "❤\u{FE0F} Ann",
            "عائشة",
            "👩\u{200D}💻 Dev",
            "می\u{200C}خواهم",
            "李",
        ] {
            assert!(valid_name(ok), "{ok:?}");
        }
        for bad in [
            "admin\u{202E}nimda",
            "\u{2067}bob",
            "a\u{200B}b",
            "\u{3164}",
            "x\u{E0041}",
            "\u{FEFF}carol",
            "tab\tname",
            "\u{200D}",
            "\u{200C} \u{FE0F}",
            "\u{2800}",
            "a\u{2028}b",
            "x\u{1D173}",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
