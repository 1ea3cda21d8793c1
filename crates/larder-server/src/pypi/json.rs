//! The JSON form of the simple repository API (PEP 691, with PEP 700's
//! sizes and versions and PEP 714's `core-metadata`): one set of types, which
//! this index writes and reads back from its upstreams.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `/simple/`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectList {
    pub meta: Meta,
    pub projects: Vec<ProjectName>,
}

/// One project of [`ProjectList`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectName {
    pub name: String,
}

/// `/simple/<project>/`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectPage {
    pub meta: Meta,
    pub name: String,
    pub files: Vec<File>,
    /// Every version, files or not (PEP 700, API 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "api-version")]
    pub api_version: String,
}

/// One distribution file of a [`ProjectPage`].
#[derive(Debug, Serialize, Deserialize)]
pub struct File {
    pub filename: String,
    pub url: String,
    /// By hash name (`sha256`); an upstream may send `null`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hashes: BTreeMap<String, String>,
    #[serde(rename = "requires-python", default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
    #[serde(rename = "core-metadata", default, skip_serializing_if = "Option::is_none")]
    pub core_metadata: Option<CoreMetadata>,
    /// What `core-metadata` was called before PEP 714; read, never written.
    #[serde(rename = "dist-info-metadata", default, skip_serializing)]
    pub dist_info_metadata: Option<CoreMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(rename = "upload-time", default, skip_serializing_if = "Option::is_none")]
    pub upload_time: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub yanked: Yanked,
}

/// Whether a file's metadata is served on its own (`true`, or its hashes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CoreMetadata {
    Flag(bool),
    Hashes(BTreeMap<String, String>),
}

impl CoreMetadata {
    /// The metadata file's sha256, if given.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            CoreMetadata::Flag(_) => None,
            CoreMetadata::Hashes(h) => h.get("sha256").map(String::as_str),
        }
    }
}

/// `false`, `true`, or the reason a file was yanked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Yanked {
    Flag(bool),
    Reason(String),
}

impl Default for Yanked {
    fn default() -> Yanked {
        Yanked::Flag(false)
    }
}

impl Yanked {
    /// As the index keeps it: `None`, or `Some` reason (empty if none given).
    pub fn reason(&self) -> Option<String> {
        match self {
            Yanked::Flag(false) => None,
            Yanked::Flag(true) => Some(String::new()),
            Yanked::Reason(r) => Some(r.clone()),
        }
    }

    /// From what the index keeps.
    pub fn from_reason(reason: Option<&str>) -> Yanked {
        match reason {
            None => Yanked::Flag(false),
            Some("") => Yanked::Flag(true),
            Some(r) => Yanked::Reason(r.to_string()),
        }
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_other_indexes_read_leniently() {
        let page: ProjectPage = serde_json::from_str(
            r#"{"meta": {"api-version": "1.1", "_last-serial": 3}, "name": "pkg", "files": [
                {"filename": "a.whl", "url": "a.whl", "hashes": {"sha256": "x", "md5": "y"},
                 "core-metadata": {"sha256": "m"}, "dist-info-metadata": {"sha256": "m"},
                 "data-dist-info-metadata": true, "yanked": "broken", "size": 3},
                {"filename": "b.whl", "url": "b.whl", "hashes": null, "yanked": null,
                 "dist-info-metadata": true},
                {"filename": "c.whl", "url": "c.whl", "yanked": true}
            ]}"#,
        )
        .expect("parse");
        let [a, b, c] = &page.files[..] else { panic!("{page:?}") };
        assert_eq!(a.hashes.get("sha256").map(String::as_str), Some("x"));
        assert_eq!(a.core_metadata.as_ref().and_then(CoreMetadata::sha256), Some("m"));
        assert_eq!((a.yanked.reason(), a.size), (Some("broken".into()), Some(3)));
        assert!(b.hashes.is_empty());
        assert!(matches!(b.dist_info_metadata, Some(CoreMetadata::Flag(true))));
        assert_eq!(b.yanked.reason(), None);
        assert_eq!(c.yanked.reason(), Some(String::new()));
    }

    #[test]
    fn written_as_pep_691_says() {
        let file = File {
            filename: "a.whl".into(),
            url: "../a.whl".into(),
            hashes: BTreeMap::from([("sha256".into(), "x".into())]),
            requires_python: None,
            core_metadata: None,
            dist_info_metadata: Some(CoreMetadata::Flag(true)),
            size: Some(1),
            upload_time: None,
            yanked: Yanked::from_reason(None),
        };
        assert_eq!(
            serde_json::to_string(&file).expect("json"),
            r#"{"filename":"a.whl","url":"../a.whl","hashes":{"sha256":"x"},"size":1,"yanked":false}"#
        );
    }
}
