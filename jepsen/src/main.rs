//! redisraft-jepsen: runs a redisraft cluster under faults and checks the
//! history. `redisraft-jepsen --help` for usage.

use std::path::PathBuf;
use std::process::exit;

use redisraft_jepsen::client::Auth;
use redisraft_jepsen::run::{self, RunOpts};
use redisraft_jepsen::{checker, env, history};

fn usage() -> String {
    let d = RunOpts::default();
    format!(
        "\
redisraft-jepsen: Jepsen-style safety tests for redisraft

USAGE:
  redisraft-jepsen run [OPTIONS]
  redisraft-jepsen check --workload W [--ttl-tolerance MS] HISTORY
  redisraft-jepsen cleanup [--hosts n1,n2,..]
  redisraft-jepsen env

run OPTIONS (defaults in brackets):
  --workload W          list-append | register | counter | ttl | queue [{wl}]
  --nemesis N           comma list of kill, pause, partition, member, transfer,
                        crash; or all, none [{nem}]
  --nodes N             cluster size [{nodes}]
  --time-limit S        seconds of workload and faults [{tl}]
  --concurrency C       client processes [{conc}]
  --seed X              random seed [from the clock; printed in the report]
  --out DIR             history.edn, report, node logs (DIR/n1/redis.log) [{out}]
  --module PATH         redisraft.so [$REDISRAFT_MODULE, ./redisraft.so,
                        <this binary's target dir>/release/libredisraft.so,
                        ./target/release/libredisraft.so; docker: {ssh_module}]
  --env E               local (network namespaces; needs root) | local-loopback
                        (127.0.0.1, no partitions) | docker (ssh root@host)
                        [local if it works, else local-loopback]
  --hosts H1,H2,..      docker hosts [n1..nN]
  --config \"raft.x y\"   extra load option for every node (repeatable)
  --fault-interval A-B  seconds between nemesis steps [{fa}-{fb}]
  --rate R              operations per second over all processes [{rate}]
  --op-timeout S        seconds a client waits for a reply [{opt}]
  --keep-data           keep the nodes' data directories (local envs)
  --ttl-tolerance MS    clock tolerance of the ttl checker: a bound taken from
                        real time counts as broken only by more than this [{tol}]
  --password PW         nodes run with requirepass PW and raft.cluster-password
                        PW; every connection of the runner authenticates
  --cluster-user NAME   with --password: an ACL user NAME (all commands, the
                        same password) that the runner and the nodes use
                        (raft.cluster-user) [default]
  --test-diverge NODE   test knob: before the final digest comparison, SET a key
                        on NODE alone (RAFT.DEBUG EXEC), so the run must fail
                        with nodes-differ

Exit status of run: 0 valid; 1 an anomaly (or no operation succeeded);
2 setup failure; 130 interrupted. check: 0 valid, 1 anomaly, 2 error.
cleanup removes namespaces, links, firewall rules, work directories and
redis-server processes left by runners that are gone.
env prints the environment run picks without --env: `local`, or
`local-loopback` and why not local (exit 0 both ways).
",
        wl = d.workload,
        nem = d.nemesis,
        nodes = d.nodes,
        tl = d.time_limit_s,
        conc = d.concurrency,
        out = d.out.display(),
        ssh_module = env::SSH_MODULE,
        fa = d.fault_interval.0,
        fb = d.fault_interval.1,
        rate = d.rate,
        opt = d.op_timeout_s,
        tol = d.ttl_tolerance_ms,
    )
}

fn die(msg: &str) -> ! {
    eprintln!("redisraft-jepsen: {msg}");
    eprintln!("(redisraft-jepsen --help for usage)");
    exit(2)
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| die(&format!("{flag}: not a valid number: '{v}'")))
}

fn parse_run(args: &[String]) -> RunOpts {
    let mut o = RunOpts {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(0),
        ..RunOpts::default()
    };
    let (mut password, mut cluster_user) = (None, None);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--help" || a == "-h" {
            print!("{}", usage());
            exit(0);
        }
        if a == "--keep-data" {
            o.keep_data = true;
            i += 1;
            continue;
        }
        // --flag value or --flag=value
        let (flag, val) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, v.to_string()),
            _ => {
                let v = args
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| die(&format!("{a} needs a value")));
                i += 1;
                (a, v)
            }
        };
        i += 1;
        match flag {
            "--workload" => o.workload = val,
            "--nemesis" => o.nemesis = val,
            "--nodes" => o.nodes = num(flag, &val),
            "--time-limit" => o.time_limit_s = num(flag, &val),
            "--concurrency" => o.concurrency = num(flag, &val),
            "--seed" => o.seed = num(flag, &val),
            "--out" => o.out = PathBuf::from(val),
            "--module" => o.module = Some(PathBuf::from(val)),
            "--env" => o.env = Some(val),
            "--hosts" => {
                o.hosts = val
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--config" => {
                let v = val.trim();
                let (k, rest) = v.split_once(char::is_whitespace).unwrap_or_else(|| {
                    die(&format!("--config '{v}': expected \"raft.name value\""))
                });
                let k = k.trim_start_matches("--").to_string();
                o.config.push((k, rest.trim().to_string()));
            }
            "--fault-interval" => {
                let (lo, hi) = match val.split_once('-') {
                    Some((lo, hi)) => (num::<f64>(flag, lo), num::<f64>(flag, hi)),
                    None => {
                        let x = num::<f64>(flag, &val);
                        (x, x)
                    }
                };
                if !(lo > 0.0 && hi >= lo) {
                    die("--fault-interval: expected A-B seconds with 0 < A <= B");
                }
                o.fault_interval = (lo, hi);
            }
            "--rate" => o.rate = num(flag, &val),
            "--ttl-tolerance" => o.ttl_tolerance_ms = num(flag, &val),
            "--test-diverge" => o.test_diverge = Some(val),
            "--password" => password = Some(val),
            "--cluster-user" => cluster_user = Some(val),
            "--op-timeout" => {
                o.op_timeout_s = num(flag, &val);
                if o.op_timeout_s <= 0.0 {
                    die("--op-timeout must be positive");
                }
            }
            _ => die(&format!("unknown option {flag}")),
        }
    }
    o.auth = Auth::from_flags(password, cluster_user).unwrap_or_else(|e| die(&e));
    if o.env.as_deref() == Some("docker")
        && !o.hosts.is_empty()
        && !args.iter().any(|a| a.starts_with("--nodes"))
    {
        o.nodes = o.hosts.len();
    }
    o
}

fn check(args: &[String]) -> i32 {
    let mut workload = None;
    let mut path = None;
    let mut copts = checker::CheckOpts::default();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--help" | "-h" => {
                print!("{}", usage());
                return 0;
            }
            "--workload" => {
                workload = args.get(i + 1).cloned();
                i += 1;
            }
            a if a.starts_with("--workload=") => {
                workload = Some(a["--workload=".len()..].to_string())
            }
            "--ttl-tolerance" => {
                let v = args.get(i + 1).map(String::as_str).unwrap_or("");
                copts.ttl_tolerance_ms = num("--ttl-tolerance", v);
                i += 1;
            }
            a if a.starts_with("--") => die(&format!("unknown option {a}")),
            a => path = Some(a.to_string()),
        }
        i += 1;
    }
    let workload = workload.unwrap_or_else(|| die("check needs --workload W"));
    let path = path.unwrap_or_else(|| die("check needs a HISTORY file"));
    let ops = match history::read_history(&path) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("redisraft-jepsen: {e}");
            return 2;
        }
    };
    let outcome = checker::check_with(&workload, &ops, &copts);
    run::print_outcome(&outcome);
    if outcome.validity == checker::Validity::Valid {
        0
    } else {
        1
    }
}

fn cleanup(args: &[String]) -> i32 {
    let mut hosts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--help" | "-h" => {
                print!("{}", usage());
                return 0;
            }
            "--hosts" => {
                hosts = args
                    .get(i + 1)
                    .map(|v| v.split(',').map(String::from).collect())
                    .unwrap_or_default();
                i += 1;
            }
            a => die(&format!("cleanup: unexpected argument {a}")),
        }
        i += 1;
    }
    let done = env::cleanup_local();
    for d in &done {
        println!("{d}");
    }
    if !hosts.is_empty() {
        use redisraft_jepsen::env::Env;
        match env::SshEnv::new(hosts, None) {
            Ok(e) => {
                for i in 0..e.len() {
                    let d = env::SSH_DATA_DIR;
                    let r = e.sh(
                        i,
                        &format!(
                            "if [ -f {d}/redis.pid ]; then kill -9 $(cat {d}/redis.pid) 2>/dev/null; fi; iptables -w -F INPUT; true"
                        ),
                    );
                    match r {
                        Ok(_) => println!("cleaned host {}", e.name(i)),
                        Err(err) => println!("host {}: {err}", e.name(i)),
                    }
                }
            }
            Err(e) => {
                eprintln!("redisraft-jepsen: {e}");
                return 2;
            }
        }
    }
    if done.is_empty() {
        println!("nothing to clean up");
    }
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        print!("{}", usage());
        exit(2);
    };
    let rest = &args[1..];
    let code = match cmd.as_str() {
        "run" => run::run(&parse_run(rest)),
        "check" => check(rest),
        "cleanup" => cleanup(rest),
        "env" => match redisraft_jepsen::netns::NetnsEnv::available() {
            Ok(()) => {
                println!("local");
                0
            }
            Err(e) => {
                println!("local-loopback");
                eprintln!("no local env: {e}");
                0
            }
        },
        "--help" | "-h" | "help" => {
            print!("{}", usage());
            0
        }
        other => die(&format!("unknown command '{other}'")),
    };
    exit(code)
}
