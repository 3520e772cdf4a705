//! Any bytes as an aliases file: parsing and expanding never panic or run
//! away, and an expansion gives each address once.
#![no_main]

use apimail_core::aliases::Aliases;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(aliases) = Aliases::parse(text) else {
        return;
    };
    // Every name the file defines or uses, plus one only `default:` catches.
    let names = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .filter(|n| !n.is_empty())
        .chain(["root", "default", "nobody-else"]);
    for name in names.take(64) {
        if let Ok(list) = aliases.expand(name) {
            assert!(aliases.maps(name));
            let mut emails: Vec<String> = list
                .iter()
                .map(|m| m.email().to_ascii_lowercase())
                .collect();
            emails.sort();
            let before = emails.len();
            emails.dedup();
            assert_eq!(before, emails.len(), "{name} gave a duplicate");
        }
    }
});
