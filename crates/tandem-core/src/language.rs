//! A document's language: the table of languages editors highlight, and the
//! guess from a title's file extension used when no one chose one.
//!
//! Owns: [`Language`], [`LANGUAGES`], [`guess`], [`effective`], [`valid`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use serde::Serialize;

/// A language editors know: its id (as on the wire and in the store), the
/// name shown in menus and the file extensions it is guessed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Language {
    pub id: &'static str,
    pub name: &'static str,
    pub extensions: &'static [&'static str],
}

/// The language of a document nothing says anything about.
pub const PLAIN: &str = "plaintext";

/// Every language, in menu order. The first extension is the one an
/// exported file is named with.
pub const LANGUAGES: &[Language] = &[
    lang(PLAIN, "Plain text", &["txt", "text"]),
    lang("markdown", "Markdown", &["md", "markdown", "mdown"]),
    lang("javascript", "JavaScript", &["js", "mjs", "cjs", "jsx"]),
    lang("typescript", "TypeScript", &["ts", "mts", "cts", "tsx"]),
    lang("python", "Python", &["py", "pyi", "pyw"]),
    lang("rust", "Rust", &["rs"]),
    lang("go", "Go", &["go"]),
    lang("java", "Java", &["java"]),
    lang("c", "C", &["c", "h"]),
    lang(
        "cpp",
        "C++",
        &["cpp", "cc", "cxx", "c++", "hpp", "hh", "hxx"],
    ),
    lang("json", "JSON", &["json", "jsonc", "geojson"]),
    lang("html", "HTML", &["html", "htm", "xhtml"]),
    lang("css", "CSS", &["css"]),
    lang("sql", "SQL", &["sql"]),
    lang("yaml", "YAML", &["yaml", "yml"]),
];

const fn lang(
    id: &'static str,
    name: &'static str,
    extensions: &'static [&'static str],
) -> Language {
    Language {
        id,
        name,
        extensions,
    }
}

/// The language with this id.
pub fn find(id: &str) -> Option<&'static Language> {
    LANGUAGES.iter().find(|l| l.id == id)
}

/// Whether `id` names a language (the empty string, "not chosen", does not).
pub fn valid(id: &str) -> bool {
    find(id).is_some()
}

/// The language a title's extension says (`main.rs` → `rust`), ASCII case
/// ignored; [`PLAIN`] when there is no extension or no language has it.
pub fn guess(title: &str) -> &'static str {
    let Some((stem, ext)) = title.trim().rsplit_once('.') else {
        return PLAIN;
    };
    if stem.is_empty() && ext.is_empty() {
        return PLAIN;
    }
    let ext = ext.to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|l| l.extensions.contains(&ext.as_str()))
        .map_or(PLAIN, |l| l.id)
}

/// The language a document is shown in: the one chosen if any (and still
/// known), else the guess from its title.
pub fn effective<'a>(chosen: &'a str, title: &str) -> &'a str {
    if valid(chosen) {
        chosen
    } else {
        guess(title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_from_the_extension() {
        assert_eq!(guess("main.rs"), "rust");
        assert_eq!(guess("Notes.MD"), "markdown");
        assert_eq!(guess("app.test.tsx"), "typescript");
        assert_eq!(guess("lib.h"), "c");
        assert_eq!(guess("x.c++"), "cpp");
        assert_eq!(guess("Makefile"), PLAIN);
        assert_eq!(guess("archive.tar.zst"), PLAIN);
        assert_eq!(guess(""), PLAIN);
        assert_eq!(guess("."), PLAIN);
        // A dotfile's name is its extension in no language here.
        assert_eq!(guess(".bashrc"), PLAIN);
    }

    #[test]
    fn a_choice_wins_over_the_title() {
        assert_eq!(effective("python", "main.rs"), "python");
        assert_eq!(effective("", "main.rs"), "rust");
        assert_eq!(effective("cobol", "main.rs"), "rust");
    }

    #[test]
    fn ids_and_extensions_are_unique() {
        let mut ids: Vec<_> = LANGUAGES.iter().map(|l| l.id).collect();
        let mut exts: Vec<_> = LANGUAGES.iter().flat_map(|l| l.extensions).collect();
        let (n, m) = (ids.len(), exts.len());
        ids.sort_unstable();
        ids.dedup();
        exts.sort_unstable();
        exts.dedup();
        assert_eq!((ids.len(), exts.len()), (n, m));
        assert!(LANGUAGES.iter().all(|l| !l.extensions.is_empty()));
        assert!(!valid(""));
    }
}
