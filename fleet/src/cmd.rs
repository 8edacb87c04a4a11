//! Arguments and the verbs' output. fleetctl's names, flags, messages and table shapes;
//! `--json` for scripts; Keel's exit codes (1 for a failed request or wait, 2 for a bad
//! argument or unit file, 9 when the cluster refuses, the remote command's own for
//! `status`, `journal` and `ssh`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use keel_cli_support::exit;
use keel_coordination::EtcdConfig;
use keel_fleet::agent::{Agent, AgentConfig};
use keel_fleet::config::{FleetConfig, CONF};
use keel_fleet::engine::{self, EngineConfig};
use keel_fleet::model::{format_metadata, DEFAULT_PREFIX};
use keel_fleet::registry::{Registry, UnitView};
use keel_fleet::remote::{self, SshOptions, Tunnel};
use keel_fleet::systemd::Systemctl;
use keel_fleet::table::{machine_legend, render};
use keel_fleet::unit::{is_template, Requirements, TargetState};
use keel_fleet::{FleetError, Store};

#[derive(Parser)]
#[command(
    name = "keel-fleet",
    version,
    about = "fleet's verbs over etcd v3: cluster-wide systemd units with [X-Fleet] constraints",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "FLEETCTL_ENDPOINT",
        global = true,
        default_value = "http://127.0.0.1:2379,http://127.0.0.1:4001"
    )]
    endpoint: String,
    /// Reach the cluster through SSH to this host[:port] (etcd over a port forward, SSH hops).
    #[arg(long, env = "FLEETCTL_TUNNEL", global = true)]
    tunnel: Option<String>,
    /// Where fleet's keys live in etcd.
    #[arg(long, env = "FLEETCTL_ETCD_KEY_PREFIX", global = true, default_value = DEFAULT_PREFIX)]
    etcd_key_prefix: String,
    #[arg(long, env = "FLEETCTL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    #[arg(long, env = "FLEETCTL_CERT_FILE", global = true)]
    cert_file: Option<PathBuf>,
    #[arg(long, env = "FLEETCTL_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Seconds each etcd request may take.
    #[arg(
        long,
        env = "FLEETCTL_REQUEST_TIMEOUT",
        global = true,
        default_value_t = 3.0
    )]
    request_timeout: f64,
    #[arg(
        long,
        env = "FLEETCTL_SSH_USERNAME",
        global = true,
        default_value = "core"
    )]
    ssh_username: String,
    #[arg(long, env = "FLEETCTL_STRICT_HOST_KEY_CHECKING", global = true,
          default_value_t = true, action = clap::ArgAction::Set)]
    strict_host_key_checking: bool,
    #[arg(long, env = "FLEETCTL_KNOWN_HOSTS_FILE", global = true)]
    known_hosts_file: Option<PathBuf>,
    /// An SSH private key for `status`, `journal`, `ssh` and `--tunnel` (else ssh's own).
    #[arg(long, env = "FLEETCTL_SSH_IDENTITY", global = true)]
    ssh_identity: Option<PathBuf>,
    #[arg(
        long,
        env = "FLEETCTL_SSH_TIMEOUT",
        global = true,
        default_value_t = 10
    )]
    ssh_timeout: u64,
    /// Machine-readable output (lists, and the outcome of state changes).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Clone)]
struct Wait {
    /// Do not wait for the units to reach their state.
    #[arg(long)]
    no_block: bool,
    /// Half-second polls before giving up (0: up to 120 s).
    #[arg(long, default_value_t = 0)]
    block_attempts: u32,
}

#[derive(Args)]
struct Listing {
    /// Whole machine ids and hashes.
    #[arg(long, short = 'l')]
    full: bool,
    #[arg(long)]
    no_legend: bool,
    /// Columns, comma-separated.
    #[arg(long)]
    fields: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Store unit files in the cluster (not scheduled yet).
    Submit { files: Vec<String> },
    /// Schedule units to machines without starting them.
    Load {
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Schedule and start units (files, names, template instances, globs such as 'web@*').
    Start {
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop units; they stay scheduled (loaded).
    Stop {
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop units and take them off their machines.
    Unload {
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove units from the cluster.
    Destroy {
        units: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print a unit file as the cluster holds it.
    Cat { unit: String },
    /// `systemctl status -l` of units, on the machines they run on.
    Status { units: Vec<String> },
    /// A unit's journal, from the machine it runs on.
    Journal {
        unit: String,
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, short = 'o', default_value = "short")]
        output: String,
        /// Run journalctl with sudo.
        #[arg(long)]
        sudo: bool,
    },
    /// Open a shell, or run a command, on a machine (by id or prefix) or a unit's machine.
    Ssh {
        /// Forward the SSH agent.
        #[arg(short = 'A', long)]
        forward_agent: bool,
        target: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Units scheduled to machines, with systemd's states.
    ListUnits(Listing),
    /// Units in the cluster, with target and current state.
    ListUnitFiles(Listing),
    /// Machines in the cluster, with their metadata.
    ListMachines(Listing),
    /// Run the agent (fleetd) on this machine: register, take units, and take part in
    /// electing the scheduling leader.
    Agent {
        /// fleet.conf; `FLEET_*` variables override it.
        #[arg(long, default_value = CONF)]
        config: PathBuf,
        /// The machine id (default: /etc/machine-id).
        #[arg(long)]
        machine_id: Option<String>,
    },
}

/// The exit code for an error that reached the edge.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<FleetError>() {
        Some(FleetError::Unit(_)) => exit::USAGE,
        Some(FleetError::NotFound(_)) => exit::USAGE,
        Some(FleetError::Refused(_)) => exit::REFUSED,
        _ => exit::FAILED,
    }
}

struct Ctx {
    runtime: tokio::runtime::Runtime,
    registry: Registry,
    ssh: SshOptions,
    json: bool,
    _tunnel: Option<Tunnel>,
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = cli.global;
    if let Command::Agent { config, machine_id } = &cli.command {
        return agent(config, machine_id.clone());
    }
    let ssh = SshOptions {
        user: g.ssh_username.clone(),
        strict: g.strict_host_key_checking,
        known_hosts: g.known_hosts_file.clone(),
        tunnel: g.tunnel.clone(),
        forward_agent: false,
        identity: g.ssh_identity.clone(),
        timeout_secs: g.ssh_timeout,
    };
    if !(0.1..=300.0).contains(&g.request_timeout) {
        bail!(FleetError::NotFound(
            "--request-timeout must be between 0.1 and 300 seconds".into()
        ));
    }
    let mut etcd = EtcdConfig::with_endpoints(&g.endpoint);
    etcd.timeout = Duration::from_secs_f64(g.request_timeout);
    etcd.ca_file = g.ca_file;
    etcd.cert_file = g.cert_file;
    etcd.key_file = g.key_file;
    let tunnel = match &g.tunnel {
        Some(_) => {
            let first = etcd.endpoints.first().cloned().unwrap_or_default();
            let target = first
                .split("://")
                .last()
                .unwrap_or(&first)
                .trim_end_matches('/')
                .to_string();
            let t = Tunnel::open(&ssh, &target).map_err(|e| anyhow!(e))?;
            let scheme = if first.starts_with("https") {
                "https"
            } else {
                "http"
            };
            etcd.endpoints = vec![format!("{scheme}://127.0.0.1:{}", t.local_port)];
            Some(t)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the etcd client's runtime")?;
    let store = runtime.block_on(Store::connect(&etcd, &g.etcd_key_prefix))?;
    let ctx = Ctx {
        runtime,
        registry: Registry::new(store),
        ssh,
        json: g.json,
        _tunnel: tunnel,
    };
    ctx.dispatch(cli.command)
}

impl Ctx {
    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, FleetError>>,
    ) -> anyhow::Result<T> {
        Ok(self.runtime.block_on(f)?)
    }

    fn dispatch(&self, command: Command) -> anyhow::Result<i32> {
        match command {
            Command::Submit { files } => {
                self.resolve(&files)?;
                Ok(exit::OK)
            }
            Command::Load { units, wait } => self.change(&units, TargetState::Loaded, &wait),
            Command::Start { units, wait } => self.change(&units, TargetState::Launched, &wait),
            Command::Stop { units, wait } => self.stop(&units, &wait),
            Command::Unload { units, wait } => self.change(&units, TargetState::Inactive, &wait),
            Command::Destroy { units, wait } => self.destroy(&units, &wait),
            Command::Cat { unit } => {
                let name = keel_fleet::registry::unit_name(&unit);
                let u = self
                    .block(self.registry.unit(&name))?
                    .ok_or_else(|| FleetError::NotFound(format!("Unit {name} not found")))?;
                print!("{}", u.content);
                Ok(exit::OK)
            }
            Command::Status { units } => self.status(&units),
            Command::Journal {
                unit,
                lines,
                follow,
                output,
                sudo,
            } => {
                let mut argv: Vec<String> = Vec::new();
                if sudo {
                    argv.push("sudo".into());
                }
                argv.extend(
                    ["journalctl", "--unit"]
                        .map(String::from)
                        .into_iter()
                        .chain([
                            keel_fleet::registry::unit_name(&unit),
                            "--no-pager".into(),
                            "-n".into(),
                            lines.to_string(),
                            "--output".into(),
                            output,
                        ]),
                );
                if follow {
                    argv.push("-f".into());
                }
                let name = keel_fleet::registry::unit_name(&unit);
                let (machine, ip) = self.machine_of(&name, "running")?;
                remote::run_on(&machine, &ip, &argv, &self.ssh).map_err(|e| anyhow!(e))
            }
            Command::Ssh {
                forward_agent,
                target,
                command,
            } => self.ssh(forward_agent, &target, command),
            Command::ListUnits(l) => self.list_units(&l),
            Command::ListUnitFiles(l) => self.list_unit_files(&l),
            Command::ListMachines(l) => self.list_machines(&l),
            Command::Agent { .. } => unreachable!("handled before connecting"),
        }
    }

    fn resolve(&self, args: &[String]) -> anyhow::Result<Vec<String>> {
        if args.is_empty() {
            bail!(FleetError::NotFound("no units given".into()));
        }
        self.block(self.registry.resolve(args, |w| eprintln!("{w}")))
    }

    fn change(&self, args: &[String], target: TargetState, wait: &Wait) -> anyhow::Result<i32> {
        let names = if target == TargetState::Inactive {
            self.existing(args)?
        } else {
            self.resolve(args)?
        };
        let verb = match target {
            TargetState::Launched => "start",
            TargetState::Loaded => "load",
            TargetState::Inactive => "unload",
        };
        for n in &names {
            self.block(self.registry.set_target(n, target))?;
        }
        self.settle(&names, target, verb, wait)
    }

    fn stop(&self, args: &[String], wait: &Wait) -> anyhow::Result<i32> {
        let names = self.existing(args)?;
        let mut to_stop = Vec::new();
        for n in &names {
            let u = self.block(self.registry.unit(n))?;
            match u.map(|u| u.target) {
                Some(TargetState::Inactive) => {
                    eprintln!("Unable to stop unit {n} in state inactive");
                    return Ok(exit::FAILED);
                }
                Some(TargetState::Loaded) => {}
                _ => to_stop.push(n.clone()),
            }
        }
        for n in &to_stop {
            self.block(self.registry.set_target(n, TargetState::Loaded))?;
        }
        self.settle(&to_stop, TargetState::Loaded, "stop", wait)
    }

    /// The named units that exist (fleetctl skips the others silently; globs match the cluster).
    fn existing(&self, args: &[String]) -> anyhow::Result<Vec<String>> {
        let units = self.block(self.registry.units())?;
        let mut out = Vec::new();
        for a in args {
            let name = keel_fleet::registry::unit_name(a);
            for u in &units {
                let hit = if keel_fleet::glob::is_glob(&name) {
                    !is_template(&u.name) && keel_fleet::glob::matches(&name, &u.name)
                } else {
                    u.name == name
                };
                if hit && !out.contains(&u.name) {
                    out.push(u.name.clone());
                }
            }
        }
        Ok(out)
    }

    fn destroy(&self, args: &[String], wait: &Wait) -> anyhow::Result<i32> {
        let names = self.existing(args)?;
        for n in &names {
            self.block(self.registry.destroy(n))?;
            if !self.json {
                println!("Destroyed {n}");
            }
        }
        if wait.no_block {
            return Ok(exit::OK);
        }
        let deadline = deadline(wait);
        loop {
            let views = self.block(self.registry.views())?;
            if !views.iter().any(|v| names.contains(&v.unit)) {
                if self.json {
                    println!("{}", serde_json::json!({ "destroyed": names }));
                }
                return Ok(exit::OK);
            }
            if Instant::now() > deadline {
                eprintln!("Error waiting for units: destroyed units still run on their machines");
                return Ok(exit::FAILED);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until each unit reports `target` (fleetctl's `assertUnitState`), printing
    /// `Unit X launched on id.../ip` as each does, and why a unit cannot be placed.
    fn settle(
        &self,
        names: &[String],
        target: TargetState,
        verb: &str,
        wait: &Wait,
    ) -> anyhow::Result<i32> {
        let mut global = Vec::new();
        for n in names {
            let u = self.block(self.registry.unit(n))?;
            let is_global = u
                .and_then(|u| Requirements::parse(n, &u.content).ok())
                .is_some_and(|r| r.global);
            if is_global {
                global.push(n.clone());
                if !self.json {
                    println!("Triggered global unit {n} {verb}");
                }
            } else if wait.no_block && !self.json {
                println!("Triggered unit {n} {verb}");
            }
        }
        if wait.no_block {
            return Ok(exit::OK);
        }
        let deadline = deadline(wait);
        let mut pending: Vec<String> = names
            .iter()
            .filter(|n| !global.contains(n))
            .cloned()
            .collect();
        let mut failing = String::new();
        let mut told: BTreeMap<String, String> = BTreeMap::new();
        let mut reached = Vec::new();
        loop {
            // A slow or failed poll is retried until the deadline (a busy cluster is not a
            // failed start); the last error is said when the wait gives up.
            let polled = self
                .block(self.registry.views())
                .and_then(|v| Ok((v, self.block(self.registry.unplaced())?)));
            let (views, unplaced) = match polled {
                Ok(p) => p,
                Err(e) if Instant::now() < deadline => {
                    failing = e.to_string();
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(e) => return Err(e),
            };
            pending.retain(|n| {
                let rows: Vec<&UnitView> = views.iter().filter(|v| &v.unit == n).collect();
                let done = match target {
                    TargetState::Inactive => rows.is_empty(),
                    t => rows.iter().any(|v| v.status.as_ref().is_some_and(|s| s.target == t)),
                };
                if done {
                    let on = rows.first().and_then(|v| {
                        v.machine
                            .as_deref()
                            .map(|m| machine_legend(m, v.ip.as_deref(), false))
                    });
                    if !self.json {
                        match &on {
                            Some(on) => println!("Unit {n} {target} on {on}"),
                            None => println!("Unit {n} {target}"),
                        }
                    }
                    reached.push(serde_json::json!({ "unit": n, "state": target.to_string(), "machine": rows.first().and_then(|v| v.machine.clone()) }));
                } else if let Some(why) = unplaced.get(n) {
                    if told.get(n) != Some(why) {
                        eprintln!("Unit {n} cannot be placed: {why}");
                        told.insert(n.clone(), why.clone());
                    }
                }
                !done
            });
            if pending.is_empty() {
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({ "units": reached, "global": global })
                    );
                }
                return Ok(exit::OK);
            }
            if Instant::now() > deadline {
                if !failing.is_empty() {
                    eprintln!("(an earlier poll failed: {failing})");
                }
                for n in &pending {
                    eprintln!("Error waiting for units: timed out waiting for unit {n} to report state {target}");
                }
                return Ok(exit::FAILED);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The machine a unit is scheduled to, and its address.
    fn machine_of(&self, name: &str, what: &str) -> anyhow::Result<(String, String)> {
        let views = self.block(self.registry.views())?;
        let v = views.iter().find(|v| v.unit == name).ok_or_else(|| {
            FleetError::NotFound(format!("Unit {name} does not appear to be {what}."))
        })?;
        let machine = v.machine.clone().unwrap_or_default();
        Ok((machine, v.ip.clone().unwrap_or_default()))
    }

    fn status(&self, args: &[String]) -> anyhow::Result<i32> {
        let views = self.block(self.registry.views())?;
        let mut code = exit::OK;
        for (i, a) in args.iter().enumerate() {
            let name = keel_fleet::registry::unit_name(a);
            let rows: Vec<&UnitView> = views.iter().filter(|v| v.unit == name).collect();
            if rows.is_empty() {
                if let Some(why) = self.block(self.registry.unplaced())?.get(&name) {
                    eprintln!("Unit {name} is not placed: {why}");
                } else if self.block(self.registry.unit(&name))?.is_none() {
                    eprintln!("Unit {name} does not exist.");
                } else {
                    eprintln!("Unit {name} does not appear to be loaded.");
                }
                return Ok(exit::FAILED);
            }
            for v in rows {
                if i > 0 {
                    println!();
                }
                let machine = v.machine.clone().unwrap_or_default();
                let argv = ["systemctl", "status", "-l", "--no-pager", &name].map(String::from);
                code = remote::run_on(&machine, v.ip.as_deref().unwrap_or(""), &argv, &self.ssh)
                    .map_err(|e| anyhow!(e))?;
            }
        }
        Ok(code)
    }

    fn ssh(&self, forward_agent: bool, target: &str, command: Vec<String>) -> anyhow::Result<i32> {
        let machines = self.block(self.registry.machines())?;
        let by_id: Vec<_> = machines
            .iter()
            .filter(|m| m.id.starts_with(target))
            .collect();
        let unit = keel_fleet::registry::unit_name(target);
        let by_unit = self
            .block(self.registry.views())?
            .into_iter()
            .find(|v| v.unit == unit);
        let ip = match (by_id.as_slice(), by_unit) {
            ([_], Some(_)) => bail!(FleetError::NotFound(format!(
                "ambiguous argument, both machine and unit found for {target}"
            ))),
            ([m], None) => m.ip.clone(),
            ([], Some(v)) => v.ip.unwrap_or_default(),
            ([], None) => bail!(FleetError::NotFound(
                "could not find matching unit or machine".into()
            )),
            _ => bail!(FleetError::NotFound("found more than one machine".into())),
        };
        let mut ssh = self.ssh.clone();
        ssh.forward_agent = forward_agent;
        let mut cmd = ssh.command_on(&ip, &command);
        if command.is_empty() {
            cmd.arg("-t");
        }
        let status = cmd.status().context("running ssh")?;
        Ok(status.code().unwrap_or(255))
    }

    fn print_table(
        &self,
        listing: &Listing,
        known: &[&str],
        default: &[&str],
        rows: Vec<BTreeMap<&'static str, String>>,
    ) -> anyhow::Result<i32> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(exit::OK);
        }
        let fields: Vec<String> = match &listing.fields {
            Some(f) => f.split(',').map(|s| s.trim().to_string()).collect(),
            None => default.iter().map(|s| s.to_string()).collect(),
        };
        if fields.is_empty() || fields.iter().any(String::is_empty) {
            bail!(FleetError::NotFound("Must define output format".into()));
        }
        for f in &fields {
            if !known.contains(&f.as_str()) {
                bail!(FleetError::NotFound(format!(
                    "Invalid key in output format: {f:?} (known: {})",
                    known.join(",")
                )));
            }
        }
        let mut table = Vec::new();
        if !listing.no_legend {
            table.push(fields.iter().map(|f| f.to_uppercase()).collect());
        }
        for r in &rows {
            table.push(
                fields
                    .iter()
                    .map(|f| r.get(f.as_str()).cloned().unwrap_or_else(|| "-".into()))
                    .collect(),
            );
        }
        print!("{}", render(&table));
        Ok(exit::OK)
    }

    fn list_machines(&self, l: &Listing) -> anyhow::Result<i32> {
        let mut machines = self.block(self.registry.machines())?;
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        let rows = machines
            .into_iter()
            .map(|m| {
                BTreeMap::from([
                    (
                        "machine",
                        if self.json {
                            m.id.clone()
                        } else {
                            machine_legend(&m.id, None, l.full)
                        },
                    ),
                    (
                        "ip",
                        if m.ip.is_empty() {
                            "-".into()
                        } else {
                            m.ip.clone()
                        },
                    ),
                    ("metadata", format_metadata(&m.metadata)),
                ])
            })
            .collect();
        self.print_table(
            l,
            &["machine", "ip", "metadata"],
            &["machine", "ip", "metadata"],
            rows,
        )
    }

    fn list_units(&self, l: &Listing) -> anyhow::Result<i32> {
        let views = self.block(self.registry.views())?;
        let rows = views
            .into_iter()
            .map(|v| {
                let s = v.status.clone().unwrap_or_default();
                let or_dash = |x: String| if x.is_empty() { "-".to_string() } else { x };
                let machine = v.machine.clone().unwrap_or_default();
                BTreeMap::from([
                    ("unit", v.unit.clone()),
                    (
                        "machine",
                        if self.json {
                            machine
                        } else {
                            machine_legend(&machine, v.ip.as_deref(), l.full)
                        },
                    ),
                    ("active", or_dash(s.active)),
                    ("sub", or_dash(s.sub)),
                    ("load", or_dash(s.load)),
                    (
                        "hash",
                        or_dash(if l.full || self.json {
                            s.hash
                        } else {
                            s.hash.chars().take(7).collect()
                        }),
                    ),
                ])
            })
            .collect();
        self.print_table(
            l,
            &["unit", "machine", "active", "sub", "load", "hash"],
            &["unit", "machine", "active", "sub"],
            rows,
        )
    }

    fn list_unit_files(&self, l: &Listing) -> anyhow::Result<i32> {
        let units = self.block(self.registry.units())?;
        let views = self.block(self.registry.views())?;
        let unplaced = self.block(self.registry.unplaced())?;
        let mut rows = Vec::new();
        for u in units {
            let hash = keel_fleet::unit::content_hash(&u.content);
            let global = Requirements::parse(&u.name, &u.content).is_ok_and(|r| r.global);
            let here: Vec<&UnitView> = views.iter().filter(|v| v.unit == u.name).collect();
            let state = if global {
                "-".to_string()
            } else {
                here.iter()
                    .find_map(|v| v.status.as_ref().map(|s| s.target.to_string()))
                    .unwrap_or_else(|| "inactive".into())
            };
            let target = if global {
                "global".to_string()
            } else {
                here.first()
                    .and_then(|v| {
                        v.machine
                            .as_deref()
                            .map(|m| machine_legend(m, v.ip.as_deref(), l.full))
                    })
                    .unwrap_or_else(|| "-".into())
            };
            let mut row = BTreeMap::from([
                ("unit", u.name.clone()),
                (
                    "hash",
                    if l.full || self.json {
                        hash
                    } else {
                        hash[..7].to_string()
                    },
                ),
                ("dstate", u.target.to_string()),
                ("state", state),
                ("target", target),
                ("global", global.to_string()),
                ("desc", description(&u.content)),
            ]);
            if let Some(why) = unplaced.get(&u.name) {
                if self.json {
                    row.insert("unplaced", why.clone());
                } else {
                    eprintln!("{}: cannot be placed: {why}", u.name);
                }
            }
            rows.push(row);
        }
        self.print_table(
            l,
            &[
                "unit", "hash", "dstate", "state", "target", "global", "desc",
            ],
            &["unit", "hash", "dstate", "state", "target"],
            rows,
        )
    }
}

fn description(content: &str) -> String {
    keel_fleet::unit::options(content)
        .into_iter()
        .find(|o| o.section == "Unit" && o.key == "Description")
        .map(|o| o.value)
        .unwrap_or_else(|| "-".into())
}

fn deadline(wait: &Wait) -> Instant {
    let polls = if wait.block_attempts == 0 {
        240
    } else {
        wait.block_attempts
    };
    Instant::now() + Duration::from_millis(500) * polls
}

/// fleetd: the agent, and the engine unless `disable_engine`; until SIGTERM or SIGINT.
fn agent(config: &std::path::Path, machine_id: Option<String>) -> anyhow::Result<i32> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = FleetConfig::load(config, &env)
        .map_err(|e| anyhow!(FleetError::NotFound(e.to_string())))?;
    let id = machine_id
        .or_else(remote::local_machine_id)
        .ok_or_else(|| {
            anyhow!("no machine id: /etc/machine-id is empty and --machine-id was not given")
        })?;
    // A placeholder ($private_ipv4) is the metadata source's address, else (like no setting)
    // the address this machine reaches etcd from.
    let metadata = std::fs::read_to_string(keel_fleet::config::METADATA_FILE).unwrap_or_default();
    let ip = match cfg.public_ip.clone() {
        Some(p) if p.starts_with('$') => keel_fleet::config::fill_placeholder(&p, &metadata)
            .unwrap_or_else(|| route_source(&cfg.etcd.endpoints)),
        Some(p) => p,
        None => route_source(&cfg.etcd.endpoints),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the agent's runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Reconnects are the agent's business: a cluster that is down at start is waited for.
        let store = loop {
            match Store::connect(&cfg.etcd, &cfg.key_prefix).await {
                Ok(s) => break s,
                Err(e) => {
                    eprintln!("keel-fleet agent: {e}; retrying in 2 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown() => return Ok(exit::OK),
                    }
                }
            }
        };
        eprintln!(
            "keel-fleet agent {}: ip {ip}, metadata {}, etcd {}",
            &id,
            format_metadata(&cfg.metadata),
            cfg.etcd.endpoints.join(",")
        );
        let mut acfg = AgentConfig::new(&id);
        acfg.ip = ip;
        acfg.metadata = cfg.metadata.clone();
        acfg.ttl = cfg.agent_ttl;
        let agent =
            tokio::spawn(Agent::new(store.clone(), acfg, Systemctl::default()).run(rx.clone()));
        let engine = if cfg.disable_engine {
            None
        } else {
            let ecfg = EngineConfig::new(&id);
            Some(tokio::spawn(engine::run(store, ecfg, rx)))
        };
        shutdown().await;
        let _ = tx.send(true);
        let _ = agent.await;
        if let Some(e) = engine {
            let _ = e.await;
        }
        Ok(exit::OK)
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The address this machine uses to reach the first etcd endpoint (no packet is sent): what
/// other machines can reach it at, when `public_ip` is not set. When etcd is on loopback, the
/// source address of the default route instead (TEST-NET-1 stands for "anywhere").
fn route_source(endpoints: &[String]) -> String {
    let host = endpoints
        .first()
        .and_then(|e| e.split("://").last())
        .map(|h| h.trim_end_matches('/'))
        .unwrap_or("127.0.0.1:2379");
    let probe = |to: &str| -> Option<std::net::IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect(to).ok()?;
        Some(s.local_addr().ok()?.ip())
    };
    match probe(host) {
        Some(ip) if !ip.is_loopback() => ip.to_string(),
        _ => probe("192.0.2.1:9")
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
    }
}
