//! The pages' words in each language: the shipped catalogues (`locales/<tag>.json`, one flat
//! object of keys), a deployment's own files merged over them, and the choice of language from
//! the browser's `Accept-Language` (RFC 9110 §12.5.4, matched as RFC 4647 "lookup").

use std::collections::BTreeMap;
use std::path::Path;

/// The languages shipped, each a complete catalogue (a test holds every one to English's keys).
pub(crate) const SHIPPED: [(&str, &str); 5] = [
    ("en", include_str!("../../locales/en.json")),
    ("de", include_str!("../../locales/de.json")),
    ("fr", include_str!("../../locales/fr.json")),
    ("es", include_str!("../../locales/es.json")),
    ("ja", include_str!("../../locales/ja.json")),
];

/// Where a key missing in the chosen language and the default one is looked up last.
pub(crate) const FALLBACK: &str = "en";

type Messages = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Catalog {
    languages: BTreeMap<String, Messages>,
    default: String,
}

impl Catalog {
    /// The shipped languages, each `<tag>.json` of `dir` merged over them (a file may add a
    /// language, or change some words of one), and `default` for browsers that ask for none
    /// of them. Every problem is returned, each naming its file.
    pub(crate) fn load(dir: Option<&Path>, default: &str) -> Result<Catalog, Vec<String>> {
        let mut languages = BTreeMap::new();
        let mut problems = Vec::new();
        for (tag, text) in SHIPPED {
            match serde_json::from_str::<Messages>(text) {
                Ok(messages) => {
                    languages.insert(tag.to_owned(), messages);
                }
                Err(error) => problems.push(format!("locales/{tag}.json: {error}")),
            }
        }
        if let Some(dir) = dir {
            let english = languages.get(FALLBACK).cloned().unwrap_or_default();
            read_dir(dir, &english, &mut languages, &mut problems);
        }
        let default = normalise(default);
        if !languages.contains_key(&default) {
            problems.push(format!(
                "ui.default_locale: {default:?} is no language shipped or in ui.translations_dir"
            ));
        }
        match problems.is_empty() {
            true => Ok(Catalog { languages, default }),
            false => Err(problems),
        }
    }

    /// The shipped catalogue in English alone: what pages say before any configuration.
    pub(crate) fn shipped() -> Catalog {
        Catalog::load(None, FALLBACK).unwrap_or_else(|_| Catalog {
            languages: BTreeMap::new(),
            default: FALLBACK.to_owned(),
        })
    }

    pub(crate) fn default_language(&self) -> &str {
        &self.default
    }

    /// The language to answer in: the first of `accept_language`'s ranges (by quality, then
    /// order) that names a language here, exactly or by its primary subtag (`de-AT` → `de`);
    /// else the default.
    pub(crate) fn negotiate(&self, accept_language: Option<&str>) -> &str {
        let mut ranges: Vec<(u16, usize, String)> = accept_language
            .unwrap_or_default()
            .split(',')
            .take(32)
            .enumerate()
            .filter_map(|(position, item)| {
                let mut parts = item.split(';');
                let range = normalise(parts.next()?.trim());
                // A weight that is no qvalue drops its range rather than ranking it first.
                let quality = match parts.find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("q").then_some(value)
                }) {
                    Some(value) => quality(value)?,
                    None => 1000,
                };
                (!range.is_empty() && quality > 0).then_some((quality, position, range))
            })
            .collect();
        ranges.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, range) in &ranges {
            let mut candidate = range.as_str();
            loop {
                if let Some((tag, _)) = self.languages.get_key_value(candidate) {
                    return tag;
                }
                match candidate.rsplit_once('-') {
                    Some((shorter, _)) => candidate = shorter,
                    None => break,
                }
            }
        }
        &self.default
    }

    /// The words of `key` in `language`, else in the default language, else in English; the key
    /// itself when nobody has it (a page never fails for a missing word).
    pub(crate) fn text<'a>(&'a self, language: &'a str, key: &'a str) -> &'a str {
        self.text_with_language(language, key).0
    }

    /// As `text`, with the language the words are in (for a page to mark words it had to take
    /// from another language, WCAG 3.1.2).
    pub(crate) fn text_with_language<'a>(
        &'a self,
        language: &'a str,
        key: &'a str,
    ) -> (&'a str, &'a str) {
        [language, self.default.as_str(), FALLBACK]
            .into_iter()
            .find_map(|tag| Some((self.languages.get(tag)?.get(key)?.as_str(), tag)))
            .unwrap_or((key, FALLBACK))
    }

    #[cfg(test)]
    fn keys_of(&self, language: &str) -> Vec<&str> {
        self.languages
            .get(language)
            .map(|messages| messages.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// `en-US` and `EN_us` alike: lower case, hyphens.
pub(crate) fn normalise(tag: &str) -> String {
    tag.trim().to_ascii_lowercase().replace('_', "-")
}

/// An RFC 9110 qvalue in thousandths.
fn quality(text: &str) -> Option<u16> {
    let value: f32 = text.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

/// The `{name}`s of a text, in order.
fn placeholders(text: &str) -> Vec<&str> {
    text.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

/// A deployment's words must be for keys the pages have, and keep every fact English states:
/// a translation that drops `{host}` from "Sends you back to {host}" hides what the page is
/// there to show.
fn check_against_english(path: &Path, messages: &Messages, english: &Messages) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, text) in messages {
        match english.get(key) {
            None => problems.push(format!(
                "{}: {key:?} is no key of the pages' words (locales/en.json)",
                path.display()
            )),
            Some(original) => {
                let (mut want, mut have) = (placeholders(original), placeholders(text));
                want.sort_unstable();
                have.sort_unstable();
                if want != have {
                    problems.push(format!(
                        "{}: {key:?} must use the placeholders {want:?}, as English does",
                        path.display()
                    ));
                }
            }
        }
    }
    problems
}

fn read_dir(
    dir: &Path,
    english: &Messages,
    languages: &mut BTreeMap<String, Messages>,
    problems: &mut Vec<String>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(format!("ui.translations_dir {}: {error}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(tag) = path.file_stem().and_then(|s| s.to_str()).map(normalise) else {
            continue;
        };
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            problems.push(format!(
                "{}: the file's name must be a language tag (de.json, pt-br.json)",
                path.display()
            ));
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                serde_json::from_str::<Messages>(&text).map_err(|error| error.to_string())
            });
        match parsed {
            Ok(messages) => {
                let found = check_against_english(&path, &messages, english);
                if found.is_empty() {
                    languages.entry(tag).or_default().extend(messages);
                }
                problems.extend(found);
            }
            Err(error) => problems.push(format!(
                "{}: {error} (one JSON object of strings)",
                path.display()
            )),
        }
    }
}

/// `template` with each `{name}` replaced by its value; values are inserted as given (the caller
/// escapes them for HTML first), in one pass, so a value that itself reads `{other}` stays as it
/// is.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.split_once('}').and_then(|(name, tail)| {
            let (_, value) = values.iter().find(|(wanted, _)| *wanted == name)?;
            Some((value, tail))
        });
        match value {
            Some((value, tail)) => {
                text.push_str(value);
                rest = tail;
            }
            None => {
                text.push('{');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_language_has_every_key_and_the_same_placeholders() {
        let catalog = Catalog::shipped();
        let english = catalog.keys_of("en");
        assert!(english.len() > 30, "{english:?}");
        for (tag, _) in SHIPPED {
            assert_eq!(catalog.keys_of(tag), english, "{tag} has other keys");
            for key in &english {
                let text = catalog.text(tag, key);
                assert!(!text.trim().is_empty(), "{tag}: {key} is empty");
                assert_eq!(
                    placeholders(text),
                    placeholders(catalog.text("en", key)),
                    "{tag}: {key}"
                );
            }
        }
    }

    #[test]
    fn the_browsers_preference_picks_the_language_by_quality_and_subtag() {
        let catalog = Catalog::shipped();
        assert_eq!(catalog.negotiate(None), "en");
        assert_eq!(catalog.negotiate(Some("de-AT,de;q=0.9,en;q=0.8")), "de");
        assert_eq!(catalog.negotiate(Some("pt-BR, fr;q=0.5, ja;q=0.7")), "ja");
        assert_eq!(catalog.negotiate(Some("FR_ca")), "fr");
        assert_eq!(catalog.negotiate(Some("de;q=0, es")), "es");
        assert_eq!(catalog.negotiate(Some("*")), "en");
        assert_eq!(
            catalog.negotiate(Some("xx, ;;;, q=2, de;q=abc, fr;q=NaN, ja;q=-1")),
            "en",
            "a broken weight drops its range"
        );
        assert_eq!(catalog.negotiate(Some("es;q=0.2, de;Q=0.5")), "de");
        let long = "zz,".repeat(10_000) + "de";
        assert_eq!(
            catalog.negotiate(Some(&long)),
            "en",
            "only the first 32 ranges count"
        );
    }

    #[test]
    fn a_deployments_files_change_words_and_add_languages() {
        let dir = std::env::temp_dir().join(format!("mob-locales-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("de.json"), r#"{"consent.allow": "Zulassen"}"#).unwrap();
        std::fs::write(dir.join("pt-BR.json"), r#"{"consent.allow": "Permitir"}"#).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let catalog = Catalog::load(Some(&dir), "de").unwrap();
        assert_eq!(catalog.text("de", "consent.allow"), "Zulassen");
        assert_eq!(
            catalog.text("de", "consent.deny"),
            "Ablehnen",
            "the rest stays"
        );
        assert_eq!(catalog.negotiate(Some("pt-BR")), "pt-br");
        assert_eq!(catalog.text("pt-br", "consent.allow"), "Permitir");
        assert_eq!(
            catalog.text("pt-br", "consent.deny"),
            "Ablehnen",
            "missing words come from the default language"
        );
        assert_eq!(catalog.negotiate(Some("it")), "de");

        assert_eq!(
            catalog.text_with_language("pt-br", "consent.deny"),
            ("Ablehnen", "de")
        );

        std::fs::write(dir.join("fr.json"), r#"{"consent.allow": 3}"#).unwrap();
        std::fs::write(
            dir.join("es.json"),
            r#"{"consent.sent_back": "Le devuelve", "consent.alow": "Permitir"}"#,
        )
        .unwrap();
        let problems = Catalog::load(Some(&dir), "xx").unwrap_err().join("\n");
        assert!(problems.contains("fr.json"), "{problems}");
        assert!(
            problems.contains("\"consent.sent_back\" must use the placeholders [\"host\"]"),
            "{problems}"
        );
        assert!(
            problems.contains("\"consent.alow\" is no key of the pages' words"),
            "{problems}"
        );
        assert!(problems.contains("ui.default_locale: \"xx\""), "{problems}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn placeholders_are_filled_by_name_once() {
        assert_eq!(
            fill(
                "Allow {client} to use {resource}?",
                &[("client", "A"), ("resource", "B")]
            ),
            "Allow A to use B?"
        );
        assert_eq!(
            fill(
                "{client} / {resource} {unknown} {",
                &[("client", "{resource}"), ("resource", "B")]
            ),
            "{resource} / B {unknown} {",
            "a value naming a placeholder is not filled again"
        );
    }
}
