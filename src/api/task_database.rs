//! The databases a task asks its nodes for, in the shapes vantage6 uses: as a task takes them
//! (`POST /task`), as it shows them (`GET /task`), and as a container token names them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A database a task asks for: its label, and its other parameters as a JSON object's text
/// (vantage6 keeps them so).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDatabase {
    pub label: String,
    #[serde(default)]
    pub parameters: Option<String>,
}

/// The longest database label a task may name.
pub const MAX_DATABASE_LABEL: usize = 128;
/// The most databases one task may name.
pub const MAX_TASK_DATABASES: usize = 32;

impl TaskDatabase {
    /// A task's `databases` as vantage6 takes them (a label alone, or objects with a `label`),
    /// or why not.
    pub fn list(value: Option<&Value>) -> Result<Vec<TaskDatabase>, String> {
        let items = match value {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::String(label)) => vec![serde_json::json!({ "label": label })],
            Some(Value::Array(items)) => items.clone(),
            Some(other) => return Err(format!("databases: not a list ({other})")),
        };
        if items.len() > MAX_TASK_DATABASES {
            return Err(format!("databases: at most {MAX_TASK_DATABASES}"));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let Value::Object(mut fields) = item else {
                    return Err(format!("databases[{i}]: not an object with a label"));
                };
                let label = match fields.remove("label") {
                    Some(Value::String(l)) if !l.is_empty() => l,
                    _ => return Err(format!("databases[{i}]: a label is required")),
                };
                if label.chars().count() > MAX_DATABASE_LABEL {
                    return Err(format!(
                        "databases[{i}].label: longer than {MAX_DATABASE_LABEL} characters"
                    ));
                }
                // vantage6 keeps the rest as a JSON object's text, `{}` when there is none.
                let parameters = Some(Value::Object(fields).to_string());
                Ok(TaskDatabase { label, parameters })
            })
            .collect()
    }

    /// As vantage6 names it in a container token, and as its algorithm client sends it on to a
    /// subtask: the parameters with the label among them.
    pub fn flattened(&self) -> Value {
        let mut fields = self.parameters();
        fields.insert("label".into(), Value::String(self.label.clone()));
        Value::Object(fields)
    }

    /// The parameters, as an object (none: empty).
    pub fn parameters(&self) -> serde_json::Map<String, Value> {
        self.parameters
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    }
}
