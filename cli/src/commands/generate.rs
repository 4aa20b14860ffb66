//! Deterministic test inputs: the same count always gives the same bytes.

use std::io::{BufWriter, Write};
use std::path::Path;

const NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Barbara",
    "Ken",
    "Zoë",
    "O'Brien, Pat",
    "Ana \"Nita\" Li",
];

/// Writes `records` records: CSV (`id,email,name,amount` with a header row) or JSON Lines.
pub fn write(path: &Path, records: u64, jsonl: bool) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    if !jsonl {
        writeln!(out, "id,email,name,amount")?;
    }
    for id in 0..records {
        let name = NAMES[(id % NAMES.len() as u64) as usize];
        let email = format!("user{id}@example.com");
        let amount = format!("{}.{:02}", id % 1000, id % 100);
        if jsonl {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"id": id, "email": email, "name": name, "amount": amount}),
            )?;
            out.write_all(b"\n")?;
        } else {
            let quoted = if name.contains([',', '"']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.to_string()
            };
            writeln!(out, "{id},{email},{quoted},{amount}")?;
        }
    }
    out.flush()?;
    eprintln!("wrote {records} records to {}", path.display());
    Ok(())
}
