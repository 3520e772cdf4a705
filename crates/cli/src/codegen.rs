//! Man pages and shell completions, generated from the clap definition.
//! `cargo codegen` writes them; `cargo codegen --check` (run in CI) fails
//! when they are stale.

use std::path::PathBuf;

use clap_complete::Shell;

/// Generated files: (path relative to the workspace root, contents).
pub fn generated_files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let command = crate::command();
    man_pages(&command, "apimail", &mut files);
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = crate::command();
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut command, "apimail", &mut out);
        let name = match shell {
            Shell::Bash => "apimail.bash",
            Shell::Zsh => "_apimail",
            _ => "apimail.fish",
        };
        files.push((PathBuf::from("completions").join(name), out));
    }
    files
}

fn man_pages(command: &clap::Command, name: &str, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let command = command.clone().name(name.to_owned());
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .expect("rendering into a Vec cannot fail");
    files.push((PathBuf::from("docs/man").join(format!("{name}.1")), out));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), files);
    }
}
