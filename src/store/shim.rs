//! TEMPORARY stand-in for the writer thread (being built on branch `store`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{CallRecord, Delta, Result, Store};
use crate::plan::Known;

#[derive(Clone)]
pub struct Writer(Arc<Mutex<Store>>);

impl Writer {
    pub fn spawn(store: Store) -> Writer {
        Writer(Arc::new(Mutex::new(store)))
    }
    fn s(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub async fn record(&self, run: i64, call: CallRecord, delta: Delta) -> Result<i64> {
        self.s().record(run, &call, &delta)
    }
    pub async fn write_intent(
        &self,
        run: i64,
        target: String,
        key: String,
        name: String,
    ) -> Result<()> {
        self.s().write_intent(run, &target, &key, &name)
    }
    pub async fn drop_intent(&self, target: String, key: String) -> Result<()> {
        self.s().drop_intent(&target, &key)
    }
    pub async fn cache_resolution(
        &self,
        target: String,
        email: String,
        id: Option<String>,
    ) -> Result<()> {
        self.s().cache_resolution(&target, &email, id.as_deref())
    }
    pub async fn begin_run(&self, command: String, full: bool, digest: String) -> Result<i64> {
        self.s().begin_run(&command, full, &digest)
    }
    pub async fn finish_run(
        &self,
        run: i64,
        outcome: String,
        exit_code: i32,
        summary: String,
    ) -> Result<()> {
        self.s().finish_run(run, &outcome, exit_code, &summary)
    }
    pub async fn known(&self, target: String) -> Result<Known> {
        self.s().known(&target)
    }
    pub async fn resolution_cache(
        &self,
        target: String,
    ) -> Result<HashMap<String, Option<String>>> {
        self.s().resolution_cache(&target)
    }
}
