//! `cbuild check`: real rebuilds in the sandbox, compared with what is
//! stored, which stays as it was.

use crate::support::Project;

fn project() -> Project {
    Project::new().file(
        "recipe.cb",
        r#"
{
  steady = package {
    name = "steady", version = "1",
    script = ''
      mkdir -p $out/bin
      printf '#!/bin/sh\necho %s\n' "$out" > $out/bin/steady
      chmod +x $out/bin/steady
    '',
  },
  clock = package {
    name = "clock", version = "1",
    script = ''
      mkdir -p $out/share
      echo stable > $out/share/a
      date +%s%N > $out/share/stamp
      head -c 16 /dev/urandom > $out/share/random
    '',
  },
  tarred = package {
    name = "tarred", version = "1",
    script = ''
      mkdir -p $out data
      echo same > data/a
      date +%s%N > data/when
      tar -cf $out/data.tar data
    '',
  },
}
"#,
    )
}

#[test]
fn a_deterministic_build_is_reproducible_even_with_a_self_reference() {
    let p = project();
    let r = p.run(&["check", "-A", "steady", "--rounds", "2"]).ok();
    assert!(r.stdout().starts_with("reproducible: "), "{}", r.stdout());
    assert!(r.stdout().contains("(2 rebuilds)"), "{}", r.stdout());
    let out = p.run(&["realise", "-A", "steady"]).ok().stdout();
    let info = p.run(&["store", "path-info", out.trim()]).ok().stdout();
    assert!(
        info.contains("checked:    reproducible at ") && info.contains(", 2 rebuild(s)"),
        "{info}"
    );
}

#[test]
fn a_build_that_differs_names_each_file_and_its_first_difference() {
    let p = project();
    let stored = p.run(&["realise", "-A", "clock"]).ok().stdout();
    let r = p.run(&["check", "-A", "clock", "--json"]).fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let t = &v[0];
    assert_eq!(t["reproducible"], false);
    let out = &t["rounds"][0]["outputs"][0];
    assert_eq!(out["stored"].as_str().unwrap(), stored.trim());
    assert_eq!(out["identical"], false);
    let diffs: Vec<(&str, &str)> = out["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        diffs,
        [("share/random", "content"), ("share/stamp", "content")]
    );
    let stamp = &out["differences"][1]["detail"];
    assert!(stamp.as_str().unwrap().contains("--- stored"), "{stamp}");
    let causes: Vec<&str> = out["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["random bytes", "embedded timestamp"]);
    // The verdict is recorded with the stored output.
    let info = p.run(&["store", "path-info", stored.trim(), "--json"]).ok();
    let info: serde_json::Value = serde_json::from_str(&info.stdout()).unwrap();
    assert_eq!(info["checks"][0]["verdict"], "differs", "{info}");
    assert_eq!(info["checks"][0]["rounds"], 1);
    // What is stored stays: a realise reuses it.
    let again = p.run(&["realise", "-A", "clock", "--json"]).ok();
    let j: serde_json::Value = serde_json::from_str(&again.stdout()).unwrap();
    assert_eq!(j["built"], serde_json::json!([]), "{j}");

    // --keep-failed keeps the rebuilt tree and says where.
    let r = p
        .run(&["check", "-A", "clock", "--keep-failed"])
        .fails_with(1);
    let line = r
        .stdout()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("the rebuilt tree is kept in ")
                .map(String::from)
        })
        .unwrap_or_else(|| panic!("{}", r.stdout()));
    assert!(std::path::Path::new(&line).is_dir(), "{line}");
}

#[test]
fn vary_catches_what_a_plain_rebuild_misses_and_names_the_variation() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
{
  cores = package {
    name = "cores", version = "1", build_inputs = [host_tool("nproc")],
    script = "mkdir -p $out; echo building with $(nproc) cpus > $out/cores",
  },
  where = package {
    name = "where", version = "1",
    script = "mkdir -p $out; echo built in $PWD > $out/where",
  },
  who = package {
    name = "who", version = "1", build_inputs = [host_tool("id")],
    script = "mkdir -p $out; echo built by $(id -u):$(id -g) > $out/who",
  },
  clean = package { name = "clean", version = "1", script = "mkdir -p $out; echo ok > $out/ok" },
}
"#,
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (attr, variation, cause) in [
        ("cores", "one CPU", "unknown"),
        ("where", "another build directory", "build or scratch path"),
        ("who", "another uid and gid", "unknown"),
    ] {
        if attr == "cores" && cpus == 1 {
            // One CPU already: nothing to vary.
            continue;
        }
        // A plain rebuild on this machine gives the same bytes ...
        p.run(&["check", "-A", attr]).ok();
        // ... a varied one does not, and says which variation did it.
        let r = p
            .run(&["check", "-A", attr, "--vary", "--json"])
            .fails_with(1);
        let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
        let differing: Vec<(&str, &str)> = v[0]["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outputs"][0]["identical"] == false)
            .map(|r| {
                (
                    r["variation"].as_str().unwrap(),
                    r["outputs"][0]["differences"][0]["cause"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(differing.len(), 1, "{attr}: {differing:?}");
        assert!(
            differing[0].0.starts_with(variation),
            "{attr}: {differing:?}"
        );
        assert_eq!(differing[0].1, cause, "{attr}");
    }
    let r = p.run(&["check", "-A", "clean", "--vary"]).ok();
    assert!(r.stdout().starts_with("reproducible: "), "{}", r.stdout());
    assert!(
        r.stderr()
            .contains("does not change the order of directory listings"),
        "{}",
        r.stderr()
    );
}

#[test]
fn archives_in_an_output_are_compared_member_by_member() {
    let p = project();
    let r = p.run(&["check", "-A", "tarred", "--json"]).fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let diffs: Vec<(&str, &str, &str)> = v[0]["rounds"][0]["outputs"][0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["cause"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        diffs,
        [("data.tar:data/when", "content", "embedded timestamp")]
    );
}

#[test]
fn check_conda_rebuilds_the_export_derivation_and_compares_the_payload() {
    let p = project();
    let r = p.run(&["check", "--conda", "-A", "steady"]).ok();
    assert!(
        r.stdout().starts_with("reproducible: ") && r.stdout().contains("-steady-conda.drv"),
        "{}",
        r.stdout()
    );
    let r = p
        .run(&["check", "--conda", "-A", "clock", "--json"])
        .fails_with(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let t = &v.as_array().unwrap()[0];
    assert!(
        t["drv"].as_str().unwrap().ends_with("-clock-conda.drv"),
        "{t}"
    );
    let diffs = t["rounds"][0]["outputs"][0]["differences"]
        .as_array()
        .unwrap();
    let stamp = diffs.iter().find(|d| d["path"] == "share/stamp").unwrap();
    assert_eq!(stamp["kind"], "content", "{stamp}");
    assert_eq!(stamp["cause"], "embedded timestamp", "{stamp}");
    assert!(diffs.iter().all(|d| d["path"] != "share/a"), "{diffs:?}");
}

#[test]
fn shell_randomness_an_occasional_file_and_listing_order_are_named_with_kind_and_cause() {
    let p = Project::new().file(
        "recipe.cb",
        r#"
let bash = host_tool("bash"), shuf = host_tool("shuf"), seq = host_tool("seq") in {
  dice = package {
    name = "dice", version = "1", build_inputs = [bash],
    script = "mkdir -p $out; bash -c 'echo $RANDOM$RANDOM$RANDOM$RANDOM' > $out/roll",
  },
  sometimes = package {
    name = "sometimes", version = "1", build_inputs = [bash],
    script = ''
      mkdir -p $out
      echo always > $out/always
      if bash -c 'exit $((RANDOM % 2))'; then echo once > $out/extra; fi
    '',
  },
  listing = package {
    name = "listing", version = "1", build_inputs = [shuf, seq],
    script = ''
      # Lines appended as parallel jobs finish: the order changes, the
      # lines do not.
      mkdir -p $out
      for i in $(seq 1 40 | shuf); do echo "compiled file$i.o" >> $out/list; done
    '',
  },
}
"#,
    );
    let differences = |attr: &str, rounds: &str| -> Vec<(String, String, String)> {
        let r = p
            .run(&["check", "-A", attr, "--rounds", rounds, "--json"])
            .fails_with(1);
        let v: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
        assert_eq!(v[0]["reproducible"], false);
        let mut out = Vec::new();
        for round in v[0]["rounds"].as_array().unwrap() {
            for d in round["outputs"][0]["differences"].as_array().unwrap() {
                let t = |k: &str| d[k].as_str().unwrap().to_string();
                let e = (t("path"), t("kind"), t("cause"));
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        out
    };
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        differences("dice", "1"),
        [s("roll", "content", "random bytes")]
    );
    // Present in half the builds: 16 rebuilds all agreeing with the stored
    // one has odds of 1 in 65,536.
    let extra = differences("sometimes", "16");
    assert!(
        extra.iter().all(|(p, _, _)| p == "extra")
            && extra.iter().any(|(_, k, _)| {
                k == "only in the stored output" || k == "only in the rebuild"
            }),
        "{extra:?}"
    );
    assert_eq!(
        differences("listing", "1"),
        [s(
            "list",
            "content",
            "ordering or parallelism (the same lines in another order)"
        )]
    );
}

/// Issue 20: after `export`, `check` and `audit` of a target compiled
/// everything again (the target itself was never built, only its export
/// build); they now use the export build and say so.
#[test]
fn check_and_audit_after_export_use_the_export_build_and_say_what_they_compare() {
    let p = Project::new().file(
        "recipe.cb",
        r#"{ pkg = package {
             name = "pkg", version = "1.0", about = { license = "MIT" },
             script = "mkdir -p $out/share; echo built > $out/share/pkg",
           } }"#,
    );
    p.run(&["export", "--conda", "-A", "pkg", "-o", "out"]).ok();
    let r = p.run(&["check", "-A", "pkg"]).ok();
    let err = r.stderr();
    assert!(
        err.contains("is not built but its export build is")
            && err.contains("-pkg-conda.drv: a rebuild against its stored output (round 1 of 1)"),
        "{err}"
    );
    // The original derivation was not built: nothing was compiled but the
    // one rebuild.
    assert!(!err.contains("building "), "{err}");
    assert!(r.stdout().contains("reproducible"), "{}", r.stdout());
    let r = p.run(&["audit", "-A", "pkg"]).ok();
    assert!(
        r.stderr().contains("is not built but its export build is"),
        "{}",
        r.stderr()
    );
    // Once the target itself is built, it is what is checked.
    p.run(&["realise", "-A", "pkg"]).ok();
    let r = p.run(&["check", "-A", "pkg"]).ok();
    assert!(!r.stderr().contains("export build"), "{}", r.stderr());
}
