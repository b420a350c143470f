//! `cbuild eval`: evaluate an expression or a recipe file.

use cbuild_lang::{Evaluator, FsHost, Value};

use super::args::{EvalArgs, GlobalArgs};
use super::error::CliError;
use super::{Output, attr_path};

/// Runs `cbuild eval`.
pub fn run(_global: &GlobalArgs, args: EvalArgs, out: &mut Output) -> Result<(), CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    if let Some(expr) = &args.expr {
        let mut host = FsHost::new("in `cbuild eval --expr`", cwd.clone());
        let mut ev = Evaluator::new(&mut host, cwd)?;
        let v = ev.eval_expr("<expr>", expr)?;
        let json = ev.to_json(&v)?;
        std::mem::forget(v);
        std::mem::forget(ev);
        return out.line(&json);
    }
    let file = args.file.unwrap_or_else(|| "recipe.cb".into());
    let mut host = FsHost::new("in this version of cbuild", cwd.clone());
    let mut ev = Evaluator::new(&mut host, cwd)?;
    let root = ev.eval_file(&file)?;
    let shown = file.display().to_string();
    let targets: Vec<Value> = if args.attrs.is_empty() {
        vec![root]
    } else {
        args.attrs
            .iter()
            .map(|a| attr_path::select(&mut ev, &root, a, &shown))
            .collect::<Result<_, _>>()?
    };
    for t in &targets {
        let json = ev.to_json(t)?;
        out.line(&json)?;
    }
    // The process ends right after this: freeing millions of small values
    // one by one would cost a fifth of the run on a large recipe.
    std::mem::forget(targets);
    std::mem::forget(ev);
    Ok(())
}
