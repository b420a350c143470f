//! String context and the host boundary, with a host that hands out store
//! paths the way the store host will: every string that mentions a store
//! object carries it in its context, and `derivation` receives fully
//! evaluated attributes whose strings name their inputs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use cbuild_lang::value::{Context, Derivation, Record, Str, Value};
use cbuild_lang::{ContextElem, Evaluator, Host, HostError, render};

/// A host that invents store paths from names and records what it was asked.
#[derive(Default)]
struct RecordingHost {
    derivations: Rc<RefCell<Vec<BTreeMap<String, String>>>>,
}

fn store_str(text: String, elem: ContextElem) -> Str {
    let mut c = Context::new();
    c.insert(elem);
    Str::with_context(text, c)
}

/// A field's value, with the context of strings shown as `text{ctx,...}`.
fn show(v: &Value) -> String {
    match v {
        Value::Str(s) => {
            let ctx: Vec<String> = s
                .context_iter()
                .map(|c| match c {
                    ContextElem::Source(p) => format!("src:{p}"),
                    ContextElem::Output { drv, output } => format!("out:{drv}!{output}"),
                    ContextElem::Tool(t) => format!("tool:{t}"),
                })
                .collect();
            format!("{}{{{}}}", s.text, ctx.join(","))
        }
        Value::List(l) => format!("[{}]", l.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Record(r) => {
            let fields: Vec<String> = r
                .fields
                .keys()
                .map(|k| format!("{k}={}", show(&r.get_forced(k).expect("forced"))))
                .collect();
            format!("{{{}}}", fields.join(" "))
        }
        Value::Derivation(d) => format!("drv:{}", d.drv_path.text),
        other => format!("{other:?}"),
    }
}

impl Host for RecordingHost {
    fn read_file(&mut self, path: &Path) -> Result<String, HostError> {
        Err(HostError::new(format!("no file {}", path.display())))
    }
    fn import_path(&mut self, path: &Path) -> Result<Str, HostError> {
        let name = path
            .file_name()
            .map_or("root".into(), |n| n.to_string_lossy().into_owned());
        let p = format!("/store/aaaa-{name}");
        Ok(store_str(p.clone(), ContextElem::Source(p.into())))
    }
    fn source(
        &mut self,
        path: &Path,
        exclude: &[String],
        gitignore: bool,
        _recipes: bool,
    ) -> Result<Str, HostError> {
        let p = format!(
            "/store/ssss-src{}{}",
            exclude.len(),
            if gitignore { "-gi" } else { "" }
        );
        let _ = path;
        Ok(store_str(p.clone(), ContextElem::Source(p.into())))
    }
    fn fetch(&mut self, url: &str, _hash: &str, _unpack: bool) -> Result<Derivation, HostError> {
        Err(HostError::new(format!("no network for {url}")))
    }
    fn host_tool(&mut self, name: &str) -> Result<Str, HostError> {
        let p = format!("/usr/bin/{name}");
        Ok(store_str(p.clone(), ContextElem::Tool(p.into())))
    }
    fn derivation(&mut self, attrs: &Record) -> Result<Derivation, HostError> {
        let fields: BTreeMap<String, String> = attrs
            .fields
            .keys()
            .map(|k| {
                (
                    k.to_string(),
                    show(&attrs.get_forced(k).expect("deeply forced")),
                )
            })
            .collect();
        let name = match attrs.get_forced("name") {
            Some(Value::Str(s)) => s.text.to_string(),
            _ => return Err(HostError::new("name must be a string")),
        };
        self.derivations.borrow_mut().push(fields);
        let drv: Rc<str> = format!("/store/dddd-{name}.drv").into();
        let outputs = ["out", "lib"]
            .iter()
            .map(|o| {
                let elem = ContextElem::Output {
                    drv: drv.clone(),
                    output: Rc::from(*o),
                };
                (
                    Rc::from(*o),
                    store_str(format!("/placeholder/{name}-{o}"), elem),
                )
            })
            .collect();
        Ok(Derivation {
            name: name.into(),
            version: None,
            drv_path: store_str(drv.to_string(), ContextElem::Source(drv.clone())),
            outputs,
            meta: Value::Null,
            attrs: Value::Null,
            span: None,
        })
    }
    fn trace(&mut self, _: &str, _: &str) {}
}

fn eval_with(src: &str) -> (String, Vec<BTreeMap<String, String>>) {
    let src = src.to_string();
    cbuild_lang::with_big_stack(move || {
        let mut host = RecordingHost::default();
        let log = host.derivations.clone();
        let mut ev = Evaluator::new(&mut host, "/project".into()).expect("prelude");
        let v = match ev.eval_expr("t.cb", &src) {
            Ok(v) => v,
            Err(d) => panic!("{}", render(&d, 80, false)),
        };
        ev.force_value(&v).expect("force");
        let shown = show(&v);
        drop(ev);
        let recorded = log.borrow().clone();
        (shown, recorded)
    })
}

#[test]
fn plus_and_interpolation_merge_contexts() {
    let (v, _) = eval_with(
        r#"let cc = host_tool("cc"), sh = host_tool("sh") in [cc + " " + sh, "${cc} -o x", "plain"]"#,
    );
    assert_eq!(
        v,
        "[/usr/bin/cc /usr/bin/sh{tool:/usr/bin/cc,tool:/usr/bin/sh} /usr/bin/cc -o x{tool:/usr/bin/cc} plain{}]"
    );
}

#[test]
fn join_replace_split_and_to_json_carry_context() {
    let (v, _) = eval_with(
        r#"let cc = host_tool("cc") in {
          j = join(" ", ["a", cc]),
          r = replace("use CC", "CC", cc),
          r0 = replace("nothing", "CC", cc),
          s = split("/", cc),
          t = to_json({ c = cc }),
        }"#,
    );
    assert!(v.contains("j=a /usr/bin/cc{tool:/usr/bin/cc}"), "{v}");
    assert!(v.contains("r=use /usr/bin/cc{tool:/usr/bin/cc}"), "{v}");
    assert!(v.contains("r0=nothing{}"), "{v}");
    assert!(
        v.contains("s=[{tool:/usr/bin/cc} usr{tool:/usr/bin/cc}"),
        "{v}"
    );
    assert!(
        v.contains(r#"t={"c":"/usr/bin/cc"}{tool:/usr/bin/cc}"#),
        "{v}"
    );
}

#[test]
fn interpolating_a_path_imports_it_and_a_derivation_gives_its_out() {
    let (v, drvs) = eval_with(
        r#"let d = derivation { name = "lib", script = "cp ${./patch.diff} $out" } in
           ["${d}", "${d.outputs.lib}", d.drv_path]"#,
    );
    assert_eq!(
        v,
        "[/placeholder/lib-out{out:/store/dddd-lib.drv!out} /placeholder/lib-lib{out:/store/dddd-lib.drv!lib} /store/dddd-lib.drv{src:/store/dddd-lib.drv}]"
    );
    assert_eq!(
        drvs[0]["script"],
        "cp /store/aaaa-patch.diff $out{src:/store/aaaa-patch.diff}"
    );
}

#[test]
fn derivation_receives_deeply_forced_attributes_with_inputs_in_context() {
    let (_, drvs) = eval_with(
        r#"let
             cc = host_tool("cc"),
             lib = derivation { name = "libgreet", script = "x" },
           in derivation {
             name = "hello",
             build_inputs = [cc],
             env = { LIB = "${lib}/lib", N = 3 },
             script = "cc -L${lib}/lib",
           }"#,
    );
    assert_eq!(drvs.len(), 2);
    let hello = &drvs[1];
    assert_eq!(hello["build_inputs"], "[/usr/bin/cc{tool:/usr/bin/cc}]");
    assert_eq!(
        hello["env"],
        "{LIB=/placeholder/libgreet-out/lib{out:/store/dddd-libgreet.drv!out} N=Int(3)}"
    );
}

#[test]
fn package_builds_a_derivation_from_the_prelude() {
    let (v, drvs) = eval_with(
        r#"package {
             name = "hello", version = "1.0", src = source(./.),
             build_inputs = [host_tool("cc")],
             script = "cc ${source(./.)}/hello.c",
             about = { license = "MIT", summary = "Says hello" },
             build_number = 2,
           }"#,
    );
    assert_eq!(v, "drv:/store/dddd-hello.drv");
    let d = &drvs[0];
    assert!(
        d["build_inputs"].starts_with("[/usr/bin/sh{tool:/usr/bin/sh} /usr/bin/cat"),
        "{}",
        d["build_inputs"]
    );
    assert!(
        d["build_inputs"].ends_with("/usr/bin/cc{tool:/usr/bin/cc}]"),
        "{}",
        d["build_inputs"]
    );
    assert_eq!(
        d["env"],
        "{PKG_BUILDNUM=2{} PKG_NAME=hello{} PKG_VERSION=1.0{} src=/store/ssss-src0{src:/store/ssss-src0}}"
    );
    assert_eq!(
        d["meta"],
        "{build_number=Int(2) license=MIT{} summary=Says hello{}}"
    );
    assert_eq!(d["outputs"], "[out{}]");
    assert_eq!(d["version"], "1.0{}");
}
