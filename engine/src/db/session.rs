//! How statements run on a Postgres pool: directly on a pooled connection, or,
//! behind PgBouncer in transaction pooling mode, each inside its own transaction
//! with unnamed statements.
//!
//! sqlx prepares every statement (parse, then bind and execute, in separate round
//! trips) and by default keeps it prepared under a name. Transaction pooling hands
//! each transaction (or, outside one, each round trip) to any server connection,
//! so a named statement may exist on another connection or clash with another
//! client's, and a bind may even reach a connection where another client's
//! unnamed statement waits: a wrong answer without an error. With
//! [`Session::pgbouncer`], a read is therefore wrapped in `BEGIN`/`COMMIT` (one
//! server connection for all its round trips) and statements are not persistent.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};

/// The way statements are run, the same for every pool of one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pgbouncer: bool,
}

/// A connection handed to one unit of work by [`Session::run`].
pub enum Conn {
    /// A pooled connection used directly (no PgBouncer).
    Direct(PoolConnection<Postgres>),
    /// An open transaction (behind PgBouncer), committed after the work.
    InTransaction(Transaction<'static, Postgres>),
}

impl Conn {
    /// Whether statements on this connection should be prepared under a name and
    /// cached (`Query::persistent`): `true` only without PgBouncer.
    pub fn persistent(&self) -> bool {
        matches!(self, Conn::Direct(_))
    }
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::InTransaction(t) => t,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::InTransaction(t) => t,
        }
    }
}

impl Session {
    /// Statements run directly (`pgbouncer == false`) or each unit of work in its
    /// own transaction with unnamed statements (`true`).
    pub const fn new(pgbouncer: bool) -> Self {
        Self { pgbouncer }
    }

    /// Whether this session is for PgBouncer in transaction pooling mode.
    pub const fn pgbouncer(self) -> bool {
        self.pgbouncer
    }

    /// Whether statements should be persistent (named and cached) on this
    /// session's connections.
    pub const fn persistent(self) -> bool {
        !self.pgbouncer
    }

    /// Runs one unit of work (`op`, handed a connection of `pool` and giving it
    /// back with its result) and returns the result.
    ///
    /// Runs once per query (or twice, when a replica read is retried on the
    /// primary). Behind PgBouncer the connection is a transaction, committed
    /// after a success and rolled back after a failure. Errors are the pool's
    /// (no connection in time), `op`'s, or the commit's.
    pub async fn run<T, F, Fut>(self, pool: &PgPool, op: F) -> Result<T, sqlx::Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = (Conn, Result<T, sqlx::Error>)>,
    {
        let conn = if self.pgbouncer {
            Conn::InTransaction(pool.begin().await?)
        } else {
            Conn::Direct(pool.acquire().await?)
        };
        let (conn, result) = op(conn).await;
        match (conn, result) {
            (Conn::InTransaction(tx), Ok(value)) => {
                tx.commit().await?;
                Ok(value)
            }
            (Conn::InTransaction(tx), Err(e)) => {
                // Release the server connection now; the query's error matters.
                let _ = tx.rollback().await;
                Err(e)
            }
            (Conn::Direct(_), result) => result,
        }
    }
}
