//! The two languages of the web UI, English and Simplified Chinese. Each catalog is a
//! flat TOML file of `key = "text"` under `web/i18n/`; templates read `t.<key>`, and
//! `{n}`-style placeholders are filled with the `fill` filter. A page is entirely in
//! one language: a missing key fails the unit test below, not a page.

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub type Catalog = BTreeMap<String, String>;

const EN: &str = include_str!("../../../../web/i18n/en.toml");
const ZH_CN: &str = include_str!("../../../../web/i18n/zh-CN.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// A language tag as browsers and the switcher send it.
    pub fn parse(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        match primary {
            "en" => Some(Lang::En),
            // Every Chinese variant gets the simplified catalog, the only one there is.
            "zh" => Some(Lang::ZhCn),
            _ => None,
        }
    }

    /// The most preferred language of an `Accept-Language` header that Berth speaks.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut choices: Vec<(f32, usize, Lang)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut pieces = part.split(';');
                let lang = Lang::parse(pieces.next()?)?;
                let q = pieces
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .filter_map(|q| q.parse::<f32>().ok())
                    .next()
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, i, lang))
            })
            .collect();
        choices.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        choices.first().map(|c| c.2)
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::ZhCn,
            Lang::ZhCn => Lang::En,
        }
    }

    pub fn catalog(self) -> &'static Catalog {
        static CATALOGS: OnceLock<[Catalog; 2]> = OnceLock::new();
        let all = CATALOGS.get_or_init(|| [load("en", EN), load("zh-CN", ZH_CN)]);
        match self {
            Lang::En => &all[0],
            Lang::ZhCn => &all[1],
        }
    }

    /// One text of the catalog (the key itself if missing, which the tests forbid).
    pub fn text(self, key: &str) -> String {
        self.catalog()
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }
}

fn load(name: &str, source: &str) -> Catalog {
    toml::from_str(source).unwrap_or_else(|e| {
        tracing::error!(catalog = name, error = %e, "unreadable translation catalog");
        Catalog::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_have_exactly_the_same_keys() {
        let en: Catalog = toml::from_str(EN).expect("en.toml parses");
        let zh: Catalog = toml::from_str(ZH_CN).expect("zh-CN.toml parses");
        let en_keys: Vec<&String> = en.keys().collect();
        let zh_keys: Vec<&String> = zh.keys().collect();
        let only_en: Vec<_> = en_keys.iter().filter(|k| !zh.contains_key(**k)).collect();
        let only_zh: Vec<_> = zh_keys.iter().filter(|k| !en.contains_key(**k)).collect();
        assert!(only_en.is_empty(), "missing in zh-CN.toml: {only_en:?}");
        assert!(only_zh.is_empty(), "missing in en.toml: {only_zh:?}");
        for (k, v) in en.iter().chain(zh.iter()) {
            assert!(!v.trim().is_empty(), "{k} is empty");
        }
        // Placeholders must survive translation.
        for (k, v) in &en {
            let holes = |s: &str| {
                let mut h: Vec<String> = s
                    .split('{')
                    .skip(1)
                    .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_string()))
                    .collect();
                h.sort();
                h
            };
            assert_eq!(holes(v), holes(&zh[k]), "placeholders of {k}");
        }
    }

    #[test]
    fn every_key_the_templates_and_code_use_exists() {
        let en = Lang::En.catalog();
        let mut missing = Vec::new();
        for (_, src) in super::super::TEMPLATES {
            for (i, _) in src.match_indices("t.") {
                let before = src[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key: String = src[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !key.is_empty() && !en.contains_key(&key) {
                    missing.push(key);
                }
            }
        }
        for src in [include_str!("pages.rs"), include_str!("mod.rs")] {
            for (i, _) in src.match_indices("text(\"") {
                let key: String = src[i + 6..].chars().take_while(|c| *c != '"').collect();
                if !en.contains_key(&key) {
                    missing.push(key);
                }
            }
        }
        // Keys templates build from values (`t["sort_" ~ s]`).
        let built = [
            "visibility_public",
            "visibility_internal",
            "visibility_private",
            "sort_name",
            "sort_created",
            "sort_updated",
            "filter_all",
            "filter_tagged",
            "filter_empty",
            "access_enabled",
            "access_private",
            "access_disabled",
            "access_enabled_help",
            "access_private_help",
            "access_disabled_help",
            "cadence_1d",
            "cadence_7d",
            "cadence_14d",
            "cadence_1month",
            "cadence_3month",
            "older_than_7d",
            "older_than_14d",
            "older_than_30d",
            "older_than_90d",
            "reason_policy",
            "reason_bulk_delete",
            "reason_command",
            "action_pushed",
            "action_deleted",
            "action_restored",
        ];
        missing.extend(
            built
                .iter()
                .filter(|k| !en.contains_key(**k))
                .map(|k| k.to_string()),
        );
        assert!(
            missing.is_empty(),
            "keys missing from the catalogs: {missing:?}"
        );
    }

    #[test]
    fn languages_from_headers() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::ZhCn)
        );
        assert_eq!(
            Lang::from_accept_language("fr, en;q=0.5, zh;q=0.4"),
            Some(Lang::En)
        );
        assert_eq!(
            Lang::from_accept_language("en;q=0.1, zh-Hans;q=0.9"),
            Some(Lang::ZhCn)
        );
        assert_eq!(Lang::from_accept_language("fr, de"), None);
        assert_eq!(Lang::parse("zh_CN"), Some(Lang::ZhCn));
        assert_eq!(Lang::parse("EN-gb"), Some(Lang::En));
    }
}
