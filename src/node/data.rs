//! The node's data for algorithms: vantage6's `databases` key of node.yaml, checked at start, and
//! what one run gets of them. Better than vantage6, which mounts the node's whole data folder into
//! every algorithm and hands every database's parameters to every one: a run sees only the
//! databases its task asked for, each file or folder mounted read-only, and only their
//! `DB_PARAM_*`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::api::TaskDatabase;

/// What kind of data a database holds (vantage6's `type`), told to the algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Csv,
    Parquet,
    Excel,
    Sql,
    Sparql,
    Omop,
    Folder,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Parquet => "parquet",
            Kind::Excel => "excel",
            Kind::Sql => "sql",
            Kind::Sparql => "sparql",
            Kind::Omop => "omop",
            Kind::Folder => "folder",
            Kind::Other => "other",
        }
    }

    /// Whether the URI must name a file on the node.
    fn is_file(self) -> bool {
        matches!(self, Kind::Csv | Kind::Parquet | Kind::Excel)
    }
}

/// One entry of `databases`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub label: String,
    /// A file or folder on the node, or what the algorithm connects to (an SQL or SPARQL URL).
    pub uri: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Handed to the algorithm as `<LABEL>_DB_PARAM_<KEY>`, only when its task asks for this
    /// database.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Whether `name` may name an environment variable (and so a label).
fn identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the URI of a database names on this host.
enum Place {
    File,
    Folder,
    /// Not a path on the node: passed to the algorithm as it is.
    Elsewhere,
}

fn place(db: &Database) -> Result<Place, String> {
    let path = Path::new(&db.uri);
    let readable = |what: &str| {
        let opened = if what == "folder" {
            std::fs::read_dir(path).map(drop)
        } else {
            std::fs::File::open(path).map(drop)
        };
        opened.map_err(|e| format!("{} ({what}): {e}", db.uri))
    };
    match db.kind {
        Kind::Folder => {
            if !path.is_dir() {
                return Err(format!("{}: not a folder", db.uri));
            }
            readable("folder")?;
            Ok(Place::Folder)
        }
        kind if kind.is_file() => {
            if !path.is_file() {
                return Err(format!("{}: no such file", db.uri));
            }
            readable("file")?;
            Ok(Place::File)
        }
        // An SQLite file, say: a file on the node is mounted; anything else is a URL.
        _ if path.is_absolute() && path.is_file() => {
            readable("file")?;
            Ok(Place::File)
        }
        _ => Ok(Place::Elsewhere),
    }
}

/// Checks `databases` as node.yaml gives them: labels that are identifiers, each once, keys of
/// `env` that are identifiers, and every file or folder there and readable.
pub fn check(databases: &[Database]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, db) in databases.iter().enumerate() {
        let at = format!("databases[{i}]");
        if !identifier(&db.label) {
            return Err(format!(
                "{at}.label: {:?} is not a name of letters, digits and _ (it names environment variables)",
                db.label
            ));
        }
        if !seen.insert(db.label.to_uppercase()) {
            return Err(format!("{at}.label: {:?} twice", db.label));
        }
        if let Some(key) = db.env.keys().find(|k| !identifier(k)) {
            return Err(format!(
                "{at}.env: {key:?} is not a name of letters, digits and _"
            ));
        }
        place(db).map_err(|e| format!("{at}.uri: {e}"))?;
    }
    Ok(())
}

/// Where a database's file or folder appears inside the algorithm's container.
fn target(db: &Database, place: &Place) -> Option<String> {
    match place {
        Place::File => {
            let name = Path::new(&db.uri)
                .file_name()
                .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
            Some(format!("/mnt/data/{}/{name}", db.label))
        }
        Place::Folder => Some(format!("/mnt/{}", db.label)),
        Place::Elsewhere => None,
    }
}

/// What a run gets of the node's data: environment variables (not yet encoded) and read-only
/// mounts (`host:container:ro`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunData {
    pub env: Vec<(String, String)>,
    pub binds: Vec<String>,
}

/// The data of a run whose task asked for `requested`, from the node's `databases`; an error
/// names a label the node does not have.
pub fn for_run(databases: &[Database], requested: &[TaskDatabase]) -> Result<RunData, String> {
    let mut data = RunData::default();
    let mut labels = Vec::new();
    for asked in requested {
        let Some(db) = databases.iter().find(|d| d.label == asked.label) else {
            let have: Vec<&str> = databases.iter().map(|d| d.label.as_str()).collect();
            return Err(format!(
                "the task asks for database {:?}, which this node does not have (it has: {})",
                asked.label,
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ));
        };
        if labels.contains(&db.label) {
            continue;
        }
        labels.push(db.label.clone());
        let upper = db.label.to_uppercase();
        let place = place(db).map_err(|e| format!("database {:?}: {e}", db.label))?;
        let uri = match target(db, &place) {
            Some(inside) => {
                data.binds.push(format!("{}:{inside}:ro", db.uri));
                inside
            }
            None => db.uri.clone(),
        };
        data.env.push((format!("{upper}_DATABASE_URI"), uri));
        data.env
            .push((format!("{upper}_DATABASE_TYPE"), db.kind.as_str().into()));
        for (key, value) in &db.env {
            data.env.push((
                format!("{upper}_DB_PARAM_{}", key.to_uppercase()),
                value.clone(),
            ));
        }
        // The task's own parameters for it, as vantage6 passes them.
        let parameters = asked.parameters();
        for key in ["query", "sheet_name", "preprocessing"] {
            let Some(value) = parameters.get(key) else {
                continue;
            };
            let text = match (key, value) {
                ("preprocessing", v) => v.to_string(),
                (_, serde_json::Value::String(s)) => s.clone(),
                (_, v) => v.to_string(),
            };
            data.env
                .push((format!("{upper}_{}", key.to_uppercase()), text));
        }
    }
    data.env
        .push(("USER_REQUESTED_DATABASE_LABELS".into(), labels.join(",")));
    data.env.push(("DB_LABELS".into(), labels.join(",")));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(label: &str, uri: &str, kind: Kind) -> Database {
        Database {
            label: label.into(),
            uri: uri.into(),
            kind,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn a_run_gets_only_what_its_task_asked_for() {
        let dir = std::env::temp_dir().join(format!("algonet-data-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("folder")).expect("dir");
        std::fs::write(dir.join("a.csv"), "x\n1\n").expect("csv");
        let csv = dir.join("a.csv").display().to_string();
        let mut secret = db("other", "postgresql://db/x", Kind::Sql);
        secret.env.insert("password".into(), "hunter2".into());
        let mut first = db("first", &csv, Kind::Csv);
        first.env.insert("user".into(), "ann".into());
        let dbs = vec![
            first,
            secret,
            db(
                "files",
                &dir.join("folder").display().to_string(),
                Kind::Folder,
            ),
        ];
        check(&dbs).expect("valid");
        let asked = [
            TaskDatabase {
                label: "first".into(),
                parameters: Some(r#"{"query": "q", "preprocessing": [{"f": 1}]}"#.into()),
            },
            TaskDatabase {
                label: "files".into(),
                parameters: None,
            },
        ];
        let data = for_run(&dbs, &asked).expect("data");
        let env: BTreeMap<_, _> = data.env.iter().cloned().collect();
        assert_eq!(env["FIRST_DATABASE_URI"], "/mnt/data/first/a.csv");
        assert_eq!(env["FIRST_DATABASE_TYPE"], "csv");
        assert_eq!(env["FIRST_DB_PARAM_USER"], "ann");
        assert_eq!(env["FIRST_QUERY"], "q");
        assert_eq!(env["FIRST_PREPROCESSING"], r#"[{"f":1}]"#);
        assert_eq!(env["FILES_DATABASE_URI"], "/mnt/files");
        assert_eq!(env["USER_REQUESTED_DATABASE_LABELS"], "first,files");
        assert_eq!(env["DB_LABELS"], "first,files");
        assert!(
            !env.keys().any(|k| k.starts_with("OTHER_")),
            "another database's parameters: {env:?}"
        );
        assert_eq!(
            data.binds,
            [
                format!("{csv}:/mnt/data/first/a.csv:ro"),
                format!("{}:/mnt/files:ro", dir.join("folder").display())
            ]
        );
        let e = for_run(
            &dbs,
            &[TaskDatabase {
                label: "absent".into(),
                parameters: None,
            }],
        )
        .expect_err("absent");
        assert!(
            e.contains("\"absent\"") && e.contains("first, other, files"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_databases_are_refused_naming_the_entry() {
        let dir = std::env::temp_dir().join(format!("algonet-data-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.csv"), "x\n").expect("csv");
        let csv = dir.join("a.csv").display().to_string();
        let missing = dir.join("missing.csv").display().to_string();
        let folder = dir.display().to_string();
        let mut bad_key = db("ok", &csv, Kind::Csv);
        bad_key.env.insert("not a key".into(), "x".into());
        for (dbs, says) in [
            (vec![db("a-b", &csv, Kind::Csv)], "databases[0].label"),
            (vec![db("1st", &csv, Kind::Csv)], "databases[0].label"),
            (
                vec![db("a", &csv, Kind::Csv), db("A", &csv, Kind::Csv)],
                "databases[1].label",
            ),
            (vec![db("a", &missing, Kind::Csv)], "no such file"),
            (vec![db("a", &folder, Kind::Csv)], "no such file"),
            (vec![db("a", &csv, Kind::Folder)], "not a folder"),
            (vec![bad_key], "databases[0].env"),
        ] {
            let e = check(&dbs).expect_err(says);
            assert!(e.contains(says), "{says}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
