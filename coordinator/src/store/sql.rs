//! The SQL both engines run for reads, built from typed conditions. Only the
//! placeholders differ (`?` for SQLite, `$n` for PostgreSQL); the schema and
//! every statement are otherwise the same text.

use super::{Cond, Kind, Query, Val};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

struct Params {
    dialect: Dialect,
    binds: Vec<Val>,
}

impl Params {
    /// Binds `v` and returns its placeholder.
    fn bind(&mut self, v: Val) -> String {
        self.binds.push(v);
        match self.dialect {
            Dialect::Sqlite => "?".into(),
            Dialect::Postgres => format!("${}", self.binds.len()),
        }
    }
}

/// A WHERE clause (empty, or starting with a space) and the values to bind.
pub(crate) fn where_clause(conds: &[Cond], dialect: Dialect) -> (String, Vec<Val>) {
    let mut p = Params {
        dialect,
        binds: Vec::new(),
    };
    let mut parts = Vec::new();
    for c in conds {
        match c {
            Cond::Eq(col, v) => parts.push(format!("{} = {}", col.sql(), p.bind(v.clone()))),
            Cond::Ne(col, v) => parts.push(format!(
                "({0} IS NULL OR {0} <> {1})",
                col.sql(),
                p.bind(v.clone())
            )),
            Cond::Le(col, v) => parts.push(format!("{} <= {}", col.sql(), p.bind(v.clone()))),
            Cond::In(col, vs) => {
                if vs.is_empty() {
                    parts.push("1 = 0".into());
                } else {
                    let ph: Vec<String> = vs.iter().map(|v| p.bind(v.clone())).collect();
                    parts.push(format!("{} IN ({})", col.sql(), ph.join(",")));
                }
            }
            Cond::NotIn(col, vs) => {
                if !vs.is_empty() {
                    let ph: Vec<String> = vs.iter().map(|v| p.bind(v.clone())).collect();
                    parts.push(format!(
                        "({0} IS NULL OR {0} NOT IN ({1}))",
                        col.sql(),
                        ph.join(",")
                    ));
                }
            }
            Cond::IsNull(col) => parts.push(format!("{} IS NULL", col.sql())),
            Cond::NotNull(col) => parts.push(format!("{} IS NOT NULL", col.sql())),
            Cond::Contains(cols, s) => {
                let escaped = s
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let pat = format!("%{}%", escaped.to_lowercase());
                let ors: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        format!(
                            "lower({}) LIKE {} ESCAPE '\\'",
                            c.sql(),
                            p.bind(Val::S(pat.clone()))
                        )
                    })
                    .collect();
                parts.push(format!("({})", ors.join(" OR ")));
            }
            Cond::EqNoCase(col, s) => parts.push(format!(
                "lower({}) = {}",
                col.sql(),
                p.bind(Val::S(s.to_lowercase()))
            )),
        }
    }
    if parts.is_empty() {
        (String::new(), p.binds)
    } else {
        (format!(" WHERE {}", parts.join(" AND ")), p.binds)
    }
}

/// Matching rows in id order, one page when the query has one: the page's
/// ids come from an index first, so rows skipped by the offset are never
/// read; only the page's records are.
pub(crate) fn find(kind: Kind, q: &Query, dialect: Dialect) -> (String, Vec<Val>) {
    let (w, binds) = where_clause(&q.conds, dialect);
    let order = if q.descending { "DESC" } else { "ASC" };
    let t = kind.table();
    let sql = match q.page {
        Some((off, lim)) => format!(
            "SELECT id, uuid, version, data FROM {t} WHERE id IN \
             (SELECT id FROM {t}{w} ORDER BY id {order} LIMIT {lim} OFFSET {off}) ORDER BY id {order}"
        ),
        None => format!("SELECT id, uuid, version, data FROM {t}{w} ORDER BY id {order}"),
    };
    (sql, binds)
}

pub(crate) fn count(kind: Kind, q: &Query, dialect: Dialect) -> (String, Vec<Val>) {
    let (w, binds) = where_clause(&q.conds, dialect);
    (format!("SELECT COUNT(*) FROM {}{}", kind.table(), w), binds)
}

/// The total a `find` reports: counted only when the page cannot tell.
pub(crate) fn total_known(q: &Query, got: usize) -> Option<u64> {
    let got = got as u64;
    match q.page {
        _ if q.skip_count => Some(got),
        Some((off, lim)) if !(got == 0 && off > 0) && got < lim => Some(off + got),
        None => Some(got),
        _ => None,
    }
}

/// The schema's statements for PostgreSQL: the same migrations, with ids and
/// times as 64-bit integers (SQLite's INTEGER already is; PostgreSQL's is 32).
pub(crate) fn postgres_schema(sql: &str) -> String {
    sql.replace(" INTEGER", " BIGINT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Col;

    #[test]
    fn placeholders_per_dialect_and_values_in_order() {
        let conds = vec![
            Cond::Eq(Col::Account, Val::I(3)),
            Cond::In(
                Col::State,
                vec![Val::S("Running".into()), Val::S("Stopped".into())],
            ),
            Cond::Contains(vec![Col::Name, Col::Keyword], "a_b".into()),
        ];
        let (w, b) = where_clause(&conds, Dialect::Postgres);
        assert_eq!(
            w,
            " WHERE account_id = $1 AND state IN ($2,$3) AND (lower(name) LIKE $4 ESCAPE '\\' OR lower(keyword) LIKE $5 ESCAPE '\\')"
        );
        assert_eq!(b.len(), 5);
        assert_eq!(b[3], Val::S("%a\\_b%".into()));
        let (w, _) = where_clause(&conds, Dialect::Sqlite);
        assert!(
            w.starts_with(" WHERE account_id = ? AND state IN (?,?)"),
            "{w}"
        );
        // An empty IN matches nothing, in words both engines take.
        let (w, b) = where_clause(&[Cond::In(Col::Id, vec![])], Dialect::Postgres);
        assert_eq!((w.as_str(), b.len()), (" WHERE 1 = 0", 0));
    }

    #[test]
    fn postgres_schema_widens_integers_only() {
        let s = "CREATE TABLE t (id INTEGER PRIMARY KEY, created INTEGER NOT NULL, data TEXT NOT NULL);";
        assert_eq!(
            postgres_schema(s),
            "CREATE TABLE t (id BIGINT PRIMARY KEY, created BIGINT NOT NULL, data TEXT NOT NULL);"
        );
    }
}
