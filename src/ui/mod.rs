//! What the pages look like and say, as the deployment wants it (`ui`): its name, logo and
//! colour, where its users find help, the words for its scopes, and the language of each page.

pub mod i18n;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use i18n::Catalog;

/// `ui`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// The product's name, in every page's title and heading (none: the pages name no product).
    pub title: Option<String>,
    /// An https URL of the logo (its origin is then allowed to serve images to the pages).
    pub logo_url: Option<String>,
    /// A logo file the bridge serves itself at `/ui/logo` (PNG, SVG, JPEG or WebP).
    pub logo_file: Option<PathBuf>,
    /// The buttons' colour, `#rrggbb`; white text on it must be readable (contrast ≥ 4.5:1).
    pub primary_color: Option<String>,
    /// Where users get help: an https or mailto URL, linked at the foot of every page.
    pub support_url: Option<String>,
    /// The language of a browser that asks for none the bridge has.
    pub default_locale: Option<String>,
    /// The words for the deployment's scopes (or other words for the standard ones): a text, or
    /// a text per language (`{en: …, de: …}`).
    pub scope_descriptions: BTreeMap<String, ScopeText>,
    /// `<language>.json` files merged over the shipped ones: other words, or more languages.
    pub translations_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScopeText {
    Everywhere(String),
    PerLanguage(BTreeMap<String, String>),
}

/// The largest logo file served.
const MAX_LOGO_BYTES: u64 = 512 * 1024;

impl UiConfig {
    /// Every problem of `ui`, with its field path; files named are read to be checked.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.logo_url.is_some() && self.logo_file.is_some() {
            problems.push("ui.logo_url, ui.logo_file: set one, not both".to_owned());
        }
        if let Some(url) = &self.logo_url
            && !is_https(url)
        {
            problems.push(format!("ui.logo_url: {url:?} must be an https URL"));
        }
        if let Some(path) = &self.logo_file
            && let Err(problem) = read_logo(path)
        {
            problems.push(format!("ui.logo_file: {problem}"));
        }
        if let Some(color) = &self.primary_color {
            match parse_color(color) {
                None => problems.push(format!(
                    "ui.primary_color: {color:?} must be a colour as #rrggbb"
                )),
                Some(rgb) if contrast_with_white(rgb) < 4.5 => problems.push(format!(
                    "ui.primary_color: white text on {color} has a contrast of {:.1}:1; WCAG 2.1 AA needs 4.5:1 (choose a darker colour)",
                    contrast_with_white(rgb)
                )),
                Some(_) => {}
            }
        }
        if let Some(url) = &self.support_url
            && !(is_https(url) || url.starts_with("mailto:") && url.len() > 7)
        {
            problems.push(format!(
                "ui.support_url: {url:?} must be an https or mailto URL"
            ));
        }
        if self
            .title
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.chars().count() > 100)
        {
            problems.push("ui.title: 1 to 100 characters".to_owned());
        }
        if (self.logo_url.is_some() || self.logo_file.is_some()) && self.title.is_none() {
            problems.push(
                "ui.title: required with a logo, whose text alternative it is (screen readers say it)"
                    .to_owned(),
            );
        }
        for (scope, text) in &self.scope_descriptions {
            let texts: Vec<&String> = match text {
                ScopeText::Everywhere(text) => vec![text],
                ScopeText::PerLanguage(texts) => texts.values().collect(),
            };
            if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
                problems.push(format!(
                    "ui.scope_descriptions.{scope}: say what the scope lets the client do"
                ));
            }
        }
        if let Err(found) = Catalog::load(self.translations_dir.as_deref(), self.language()) {
            problems.extend(found);
        }
    }

    fn language(&self) -> &str {
        self.default_locale.as_deref().unwrap_or("en")
    }
}

fn is_https(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|url| url.scheme() == "https" && url.host().is_some())
}

fn parse_color(color: &str) -> Option<[u8; 3]> {
    let hex = color.strip_prefix('#')?;
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

/// WCAG 2.1's contrast ratio of white on `rgb`.
fn contrast_with_white(rgb: [u8; 3]) -> f64 {
    let linear = |channel: u8| {
        let c = f64::from(channel) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * linear(rgb[0]) + 0.7152 * linear(rgb[1]) + 0.0722 * linear(rgb[2]);
    1.05 / (luminance + 0.05)
}

/// A logo the bridge serves: its bytes and media type.
#[derive(Debug, Clone)]
pub struct Logo {
    /// Shared with every response that serves it, not copied.
    pub bytes: axum::body::Bytes,
    pub media_type: &'static str,
}

fn read_logo(path: &std::path::Path) -> Result<Logo, String> {
    let media_type = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => {
            return Err(format!(
                "{}: a .png, .svg, .jpg or .webp file",
                path.display()
            ));
        }
    };
    // Read up to one byte over the limit, whatever the file claims to be.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, MAX_LOGO_BYTES + 1),
                &mut bytes,
            )
        })
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if bytes.len() as u64 > MAX_LOGO_BYTES {
        return Err(format!(
            "{}: more than {MAX_LOGO_BYTES} bytes",
            path.display()
        ));
    }
    Ok(Logo {
        bytes: axum::body::Bytes::from(bytes),
        media_type,
    })
}

/// The pages' look and words, as configured.
#[derive(Debug, Clone)]
pub struct Ui {
    pub title: Option<String>,
    /// Where the pages load the logo from: the https URL, or the bridge's `/ui/logo`.
    pub logo_src: Option<String>,
    /// The logo file's content, served at `/ui/logo`.
    pub logo_file: Option<Logo>,
    pub primary_color: Option<String>,
    pub support_url: Option<String>,
    scope_descriptions: BTreeMap<String, ScopeText>,
    pub catalog: Catalog,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            title: None,
            logo_src: None,
            logo_file: None,
            primary_color: None,
            support_url: None,
            scope_descriptions: BTreeMap::new(),
            catalog: Catalog::shipped(),
        }
    }
}

impl Ui {
    /// The configured look; `logo_path` is where the bridge serves a logo file.
    pub(crate) fn configured(config: &UiConfig, logo_path: &str) -> Result<Ui, String> {
        let catalog = Catalog::load(config.translations_dir.as_deref(), config.language())
            .map_err(|problems| problems.join("; "))?;
        let logo_file = config.logo_file.as_deref().map(read_logo).transpose()?;
        // Checked again where it is used: it is written into the pages' style.
        if let Some(color) = &config.primary_color
            && parse_color(color).is_none()
        {
            return Err(format!("ui.primary_color: {color:?} is no #rrggbb colour"));
        }
        // Language tags are matched in lower case, as the browser's are.
        let scope_descriptions = config
            .scope_descriptions
            .iter()
            .map(|(scope, text)| {
                let text = match text {
                    ScopeText::PerLanguage(texts) => ScopeText::PerLanguage(
                        texts
                            .iter()
                            .map(|(tag, text)| (i18n::normalise(tag), text.clone()))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                (scope.clone(), text)
            })
            .collect();
        let logo_src = match (&config.logo_url, &logo_file) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(_)) => Some(logo_path.to_owned()),
            (None, None) => None,
        };
        Ok(Ui {
            title: config.title.clone(),
            logo_src,
            logo_file,
            primary_color: config.primary_color.clone(),
            support_url: config.support_url.clone(),
            scope_descriptions,
            catalog,
        })
    }

    /// What `scope` lets the client do, in `language` if it can: the deployment's words, else the
    /// shipped ones for a standard scope; none for a scope nobody described. With the words, the
    /// language they are in, when known and another one.
    pub(crate) fn describe_scope<'a>(
        &'a self,
        language: &'a str,
        scope: &str,
    ) -> Option<(&'a str, Option<&'a str>)> {
        match self.scope_descriptions.get(scope) {
            Some(ScopeText::Everywhere(text)) => return Some((text, None)),
            Some(ScopeText::PerLanguage(texts)) => {
                let found = [language, self.catalog.default_language(), i18n::FALLBACK]
                    .into_iter()
                    .find_map(|tag| texts.get_key_value(tag))
                    .or_else(|| texts.iter().next());
                if let Some((tag, text)) = found {
                    return Some((text, (tag != language).then_some(tag.as_str())));
                }
            }
            None => {}
        }
        shipped_key(scope).map(|key| {
            let (text, tag) = self.catalog.text_with_language(language, key);
            (text, (tag != language).then_some(tag))
        })
    }

    /// The origin a configured logo URL is loaded from, for the pages' CSP `img-src`.
    pub(crate) fn logo_origin(&self) -> Option<String> {
        let src = self.logo_src.as_deref()?;
        let url = url::Url::parse(src).ok()?;
        Some(url.origin().ascii_serialization())
    }
}

/// The catalogue key of a standard scope's words.
fn shipped_key(scope: &str) -> Option<&'static str> {
    match scope {
        "openid" => Some("scope.openid"),
        "profile" => Some("scope.profile"),
        "email" => Some("scope.email"),
        "offline_access" => Some("scope.offline_access"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> String {
        let config: UiConfig = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        config.validate(&mut problems);
        problems.join("\n")
    }

    #[test]
    fn every_setting_is_checked_and_named() {
        assert_eq!(problems("title: Acme\nprimary_color: \"#1f5fbf\"\n"), "");
        assert!(
            problems("logo_url: https://cdn.example.com/logo.png\n")
                .contains("ui.title: required with a logo"),
        );
        assert_eq!(
            problems(&format!("title: \"{}\"\n", "会".repeat(100))),
            "",
            "characters, not bytes"
        );
        let text = problems(
            "logo_url: http://cdn.example.com/logo.png\nlogo_file: /nonexistent/logo.gif\nprimary_color: \"#ffcc00\"\nsupport_url: javascript:alert(1)\ndefault_locale: xx\nscope_descriptions: { \"mcp:tools\": \"\" }\n",
        );
        for expected in [
            "ui.logo_url, ui.logo_file: set one, not both",
            "ui.logo_url: \"http://cdn.example.com/logo.png\" must be an https URL",
            "ui.logo_file: /nonexistent/logo.gif: a .png, .svg, .jpg or .webp file",
            "ui.primary_color: white text on #ffcc00 has a contrast of 1.5:1",
            "ui.support_url: \"javascript:alert(1)\" must be an https or mailto URL",
            "ui.default_locale: \"xx\"",
            "ui.scope_descriptions.mcp:tools: say what the scope lets the client do",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        assert!(problems("primary_color: blue\n").contains("must be a colour as #rrggbb"));
    }

    #[test]
    fn scopes_are_described_in_the_deployments_words_then_the_shipped_ones() {
        let config: UiConfig = serde_yaml::from_str(
            "scope_descriptions:\n  \"mcp:tools\": { en: Use the reports tools, de: Die Berichtswerkzeuge nutzen, pt_BR: Usar as ferramentas }\n  email: Read your address\n  \"mcp:admin\": Manage the reports\n",
        )
        .unwrap();
        let ui = Ui::configured(&config, "/ui/logo").unwrap();
        assert_eq!(
            ui.describe_scope("de", "mcp:tools"),
            Some(("Die Berichtswerkzeuge nutzen", None))
        );
        assert_eq!(
            ui.describe_scope("ja", "mcp:tools"),
            Some(("Use the reports tools", Some("en"))),
            "marked as English on a Japanese page"
        );
        assert_eq!(
            ui.describe_scope("pt-br", "mcp:tools"),
            Some(("Usar as ferramentas", None)),
            "a tag written pt_BR matches the browser's pt-br"
        );
        assert_eq!(
            ui.describe_scope("de", "mcp:admin"),
            Some(("Manage the reports", None))
        );
        assert_eq!(
            ui.describe_scope("de", "email"),
            Some(("Read your address", None))
        );
        assert_eq!(
            ui.describe_scope("de", "profile"),
            Some(("Ihren Namen sehen", None))
        );
        assert_eq!(ui.describe_scope("en", "unknown:scope"), None);
    }

    #[test]
    fn contrast_is_computed_as_wcag_says() {
        assert!((contrast_with_white([0, 0, 0]) - 21.0).abs() < 0.01);
        assert!((contrast_with_white([255, 255, 255]) - 1.0).abs() < 0.01);
        assert!(contrast_with_white([0x1f, 0x5f, 0xbf]) > 4.5);
    }
}
