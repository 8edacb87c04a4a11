//! fleetctl's side: units submitted, their target states changed, and the cluster read back.
//! Arguments are resolved as fleetctl's `lazyCreateUnits` did: a unit already in the cluster,
//! else a file on disk, else an instance of a template from the cluster or from the file's
//! directory. A glob (`hello_world@*`) matches units in the cluster and files beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::{Assignment, MachineRecord, UnitRecord, UnitStatus};
use crate::store::{FleetError, Result, Store};
use crate::unit::{check_name, is_template, split_instance, Requirements, TargetState};

/// The cluster as fleetctl sees it.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
}

/// What `submit` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created,
    /// Already there with the same content.
    Same,
    /// Already there with other content, which stays (fleetctl's warning).
    Differs,
}

/// A unit's placement and states, for `list-units` and `list-unit-files`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitView {
    pub unit: String,
    pub machine: Option<String>,
    pub ip: Option<String>,
    pub status: Option<UnitStatus>,
}

/// `name` as fleetctl completes it: the file's base name, `.service` when it has no type.
pub fn unit_name(arg: &str) -> String {
    let base = Path::new(arg)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_else(|| arg.to_string());
    if check_name(&base).is_ok() || base.contains(".service") || crate::glob::is_glob(&base) {
        base
    } else {
        format!("{base}.service")
    }
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn unit(&self, name: &str) -> Result<Option<UnitRecord>> {
        self.store.get(&self.store.keys.unit(name), "unit").await
    }

    pub async fn units(&self) -> Result<Vec<UnitRecord>> {
        let (items, _) = self
            .store
            .list(&self.store.keys.units(), "unit", None)
            .await?;
        Ok(items.into_iter().map(|(_, u)| u).collect())
    }

    pub async fn machines(&self) -> Result<Vec<MachineRecord>> {
        let (items, _) = self
            .store
            .list(&self.store.keys.machines(), "machine", None)
            .await?;
        Ok(items.into_iter().map(|(_, m)| m).collect())
    }

    /// Every unit state reported, as (unit, status).
    pub async fn states(&self) -> Result<Vec<(String, UnitStatus)>> {
        let dir = self.store.keys.states();
        let (items, _) = self
            .store
            .list::<UnitStatus>(&dir, "unit state", None)
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(k, s)| {
                let rest = k.strip_prefix(&dir)?;
                let (unit, _) = rest.rsplit_once('/')?;
                Some((unit.to_string(), s))
            })
            .collect())
    }

    /// Every assignment, as (machine, assignment).
    pub async fn assignments(&self) -> Result<Vec<(String, Assignment)>> {
        let dir = self.store.keys.schedule();
        let (items, _) = self
            .store
            .list::<Assignment>(&dir, "assignment", None)
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(k, a)| {
                let (machine, _) = k.strip_prefix(&dir)?.split_once('/')?;
                Some((machine.to_string(), a))
            })
            .collect())
    }

    /// unit → why the leader could not place it.
    pub async fn unplaced(&self) -> Result<BTreeMap<String, String>> {
        let dir = self.store.keys.unplaced();
        let (items, _) = self
            .store
            .list::<crate::model::Unplaced>(&dir, "unplaced", None)
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(k, u)| Some((k.strip_prefix(&dir)?.to_string(), u.reason)))
            .collect())
    }

    /// Stores a unit, after checking its name and `[X-Fleet]` section.
    pub async fn submit(&self, name: &str, content: &str) -> Result<Submitted> {
        check_name(name)?;
        Requirements::parse(name, content)?;
        let record = UnitRecord {
            name: name.to_string(),
            content: content.to_string(),
            target: TargetState::Inactive,
        };
        if self
            .store
            .create(&self.store.keys.unit(name), &record)
            .await?
        {
            return Ok(Submitted::Created);
        }
        match self.unit(name).await? {
            Some(u) if u.content == content => Ok(Submitted::Same),
            Some(_) => Ok(Submitted::Differs),
            // Destroyed between the two calls: try once more.
            None => Ok(
                if self
                    .store
                    .create(&self.store.keys.unit(name), &record)
                    .await?
                {
                    Submitted::Created
                } else {
                    Submitted::Differs
                },
            ),
        }
    }

    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<()> {
        let Some(mut u) = self.unit(name).await? else {
            return Err(FleetError::NotFound(format!("Unit {name} does not exist.")));
        };
        if is_template(name) && target != TargetState::Inactive {
            return Err(FleetError::Refused(format!(
                "cannot activate template {name:?}: start an instance such as {}",
                name.replace("@.", "@1.")
            )));
        }
        u.target = target;
        self.store.put(&self.store.keys.unit(name), &u, None).await
    }

    pub async fn destroy(&self, name: &str) -> Result<bool> {
        self.store.delete(&self.store.keys.unit(name)).await
    }

    /// fleetctl's argument resolution; returns the unit names, creating what is missing.
    /// `warn` receives fleetctl's warnings (a unit in the cluster that differs from the file).
    pub async fn resolve(
        &self,
        args: &[String],
        mut warn: impl FnMut(String),
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let registered: Vec<String> = self.units().await?.into_iter().map(|u| u.name).collect();
        for arg in args {
            let name = unit_name(arg);
            if crate::glob::is_glob(&name) {
                let mut found: Vec<String> = registered
                    .iter()
                    .filter(|n| !is_template(n) && crate::glob::matches(&name, n))
                    .cloned()
                    .collect();
                for file in files_matching(arg, &name) {
                    let n = unit_name(&file.to_string_lossy());
                    if !is_template(&n) && !found.contains(&n) {
                        self.create_from_file(&n, &file, &mut warn).await?;
                        found.push(n);
                    }
                }
                if found.is_empty() {
                    return Err(FleetError::NotFound(format!(
                        "no unit in the cluster or on disk matches {name}"
                    )));
                }
                found.sort();
                out.extend(found);
                continue;
            }
            let path = PathBuf::from(arg);
            if registered.contains(&name) {
                if path.is_file() {
                    self.create_from_file(&name, &path, &mut warn).await?;
                }
            } else if path.is_file() {
                self.create_from_file(&name, &path, &mut warn).await?;
            } else if let Some((template, _)) = split_instance(&name) {
                let content = match self.unit(&template).await? {
                    Some(t) => t.content,
                    None => {
                        let beside = path.with_file_name(&template);
                        std::fs::read_to_string(&beside).map_err(|_| {
                            FleetError::NotFound(format!(
                                "unable to find template Unit({template}) in the cluster or at {}",
                                beside.display()
                            ))
                        })?
                    }
                };
                self.submit(&name, &content).await?;
            } else {
                return Err(FleetError::NotFound(format!(
                    "unable to find Unit({name}) in the cluster or on the filesystem"
                )));
            }
            out.push(name);
        }
        Ok(out)
    }

    async fn create_from_file(
        &self,
        name: &str,
        path: &Path,
        warn: &mut impl FnMut(String),
    ) -> Result<()> {
        let content = std::fs::read_to_string(path)
            .map_err(|e| FleetError::NotFound(format!("{}: {e}", path.display())))?;
        if self.submit(name, &content).await? == Submitted::Differs {
            warn(format!(
                "WARNING: Unit {name} in the cluster differs from local unit file {}",
                path.display()
            ));
        }
        Ok(())
    }

    /// Placement and states of every unit, one row per unit and machine.
    pub async fn views(&self) -> Result<Vec<UnitView>> {
        let machines: BTreeMap<String, String> = self
            .machines()
            .await?
            .into_iter()
            .map(|m| (m.id, m.ip))
            .collect();
        let states = self.states().await?;
        let mut rows: Vec<UnitView> = Vec::new();
        for (machine, a) in self.assignments().await? {
            let status = states
                .iter()
                .find(|(u, s)| *u == a.name && s.machine == machine)
                .map(|(_, s)| s.clone());
            rows.push(UnitView {
                unit: a.name,
                ip: machines.get(&machine).cloned(),
                machine: Some(machine),
                status,
            });
        }
        rows.sort_by(|a, b| (&a.unit, &a.machine).cmp(&(&b.unit, &b.machine)));
        Ok(rows)
    }
}

/// Files in `arg`'s directory whose names match `glob`.
fn files_matching(arg: &str, glob: &str) -> Vec<PathBuf> {
    let dir = Path::new(arg)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| crate::glob::matches(glob, &n.to_string_lossy()))
        })
        .collect();
    out.sort();
    out
}
