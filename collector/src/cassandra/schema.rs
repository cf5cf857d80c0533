//! Zipkin's schema: created when missing (as Zipkin's `CASSANDRA_ENSURE_SCHEMA`
//! does) or validated in a keyspace someone else made.

use scylla::client::session::Session;

use super::CassandraError;

/// Zipkin's schema with `{keyspace}` and `{replication}` placeholders.
const SCHEMA_CQL: &str = include_str!("schema.cql");

/// The tables this sink writes (all of Zipkin's, search included).
pub(crate) const TABLES: [&str; 7] = [
    "span",
    "dependency",
    "trace_by_service_span",
    "trace_by_service_remote_service",
    "span_by_service",
    "remote_service_by_service",
    "autocomplete_tags",
];

/// A keyspace name Cassandra accepts unquoted (it is pasted into CQL).
pub(crate) fn check_keyspace(name: &str) -> Result<(), CassandraError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with('_');
    if ok {
        Ok(())
    } else {
        Err(CassandraError::Config(format!(
            "keyspace name {name:?}: use 1-48 letters, digits and underscores"
        )))
    }
}

/// The schema's statements for `keyspace`, comments removed.
pub(crate) fn statements(keyspace: &str, replication: &str) -> Vec<String> {
    let text: String = SCHEMA_CQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.split("\n;\n")
        .map(|s| {
            s.trim()
                .replace("{keyspace}", keyspace)
                .replace("{replication}", replication)
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Tables of `keyspace` present in the cluster.
async fn tables(session: &Session, keyspace: &str) -> Result<Vec<String>, CassandraError> {
    let read = |e: &dyn std::fmt::Display| CassandraError::SchemaRead(e.to_string());
    let result = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(|e| read(&e))?
        .into_rows_result()
        .map_err(|e| read(&e))?;
    let names = result
        .rows::<(String,)>()
        .map_err(|e| read(&e))?
        .map(|r| r.map(|(t,)| t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(&e))?;
    Ok(names)
}

/// Creates Zipkin's schema when the `span` table is missing (like Zipkin:
/// an existing installation is left alone), then checks every table exists.
pub(crate) async fn ensure(
    session: &Session,
    keyspace: &str,
    replication: &str,
    create: bool,
) -> Result<(), CassandraError> {
    let present = tables(session, keyspace).await?;
    if create && !present.iter().any(|t| t == "span") {
        for statement in statements(keyspace, replication) {
            let first_line = statement.lines().next().unwrap_or_default();
            let result = session
                .query_unpaged(statement.as_str(), ())
                .await
                .map_err(|source| CassandraError::Schema {
                    statement: first_line.to_string(),
                    source: Box::new(source),
                })?;
            super::warnings::log(&result, first_line);
        }
        session
            .await_schema_agreement()
            .await
            .map_err(|e| CassandraError::SchemaRead(e.to_string()))?;
    }
    let present = tables(session, keyspace).await?;
    match TABLES.iter().find(|t| !present.iter().any(|p| p == *t)) {
        Some(table) => Err(CassandraError::MissingSchema {
            keyspace: keyspace.to_string(),
            table: table.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_statements_cover_every_table_and_index() {
        let s = statements(
            "zk",
            "{'class': 'SimpleStrategy', 'replication_factor': '1'}",
        );
        assert!(s[0].starts_with("CREATE KEYSPACE IF NOT EXISTS zk"));
        assert!(s[0].contains("'replication_factor': '1'"));
        for t in TABLES {
            assert!(
                s.iter()
                    .any(|x| x.starts_with(&format!("CREATE TABLE IF NOT EXISTS zk.{t} ("))),
                "{t}"
            );
        }
        assert_eq!(s.iter().filter(|x| x.contains("SASIIndex")).count(), 3);
        assert!(s
            .iter()
            .all(|x| !x.contains('{') || !x.contains("{keyspace}")));
        assert!(s.iter().all(|x| !x.contains("read_repair_chance")));
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(check_keyspace("zipkin2").is_ok());
        for bad in ["", "a;drop", "x y", "_x", &"k".repeat(49)] {
            assert!(check_keyspace(bad).is_err(), "{bad}");
        }
    }
}
