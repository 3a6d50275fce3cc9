//! Entry point: hand argv and the environment to the library, exit with its code.
//! For `-- CMD` the process becomes CMD and this never returns.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
    std::process::exit(aegis_init_shim::run(&args, env));
}
