//! `flowstate dump`: the entries of a checkpoint or savepoint, keyed and operator state,
//! decoded through the codecs their metadata names (numbers, strings, lists, maps, options,
//! tuples, windows), as text or as JSON lines; hex only where a codec is not a built-in one.

use std::collections::BTreeSet;

use flowstate::checkpoint::read_operator_state;
use flowstate::codec::dynamic::Schema;
use flowstate::operator::OperatorStateData;
use flowstate::snapshot::EncodedState;
use flowstate::state::CodecInfo;
use flowstate::{open_restore_sources, RestoreSource};

use flowstate::codec::dynamic::json_literal;

use crate::which::{load, ToolResult, Which};

/// Options of `flowstate dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    which: Which,
    /// Only this state.
    #[arg(long)]
    state: Option<String>,
    /// Print at most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Print one JSON object per entry (JSON lines) instead of text.
    #[arg(long)]
    json: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes the bytes of one codec for printing; hex where the codec is not understood or the
/// bytes do not decode.
struct Decoder {
    codec: String,
    schema: Option<Schema>,
}

impl Decoder {
    fn new(codec: &CodecInfo) -> Decoder {
        Decoder {
            codec: codec.name.clone(),
            schema: Schema::parse(&codec.name),
        }
    }

    /// Text: the value as a literal, or `0x<hex>` (marked when a known codec fails).
    fn text(&self, bytes: &[u8]) -> String {
        match self.schema.as_ref().map(|s| s.decode(bytes)) {
            Some(Ok(value)) => value.to_string(),
            Some(Err(e)) => format!("0x{} (not a valid {}: {e})", hex(bytes), self.codec),
            None => format!("0x{}", hex(bytes)),
        }
    }

    /// JSON: the value, or `{"hex": …}` with the codec's name.
    fn json(&self, bytes: &[u8]) -> String {
        match self.schema.as_ref().map(|s| s.decode(bytes)) {
            Some(Ok(value)) => value.to_json(),
            _ => format!(
                "{{\"codec\":{},\"hex\":\"{}\"}}",
                json_literal(&self.codec),
                hex(bytes)
            ),
        }
    }
}

/// How one state's entries print: its decoders.
struct StateDecoders {
    name: String,
    namespace: Option<Decoder>,
    value: Decoder,
    user_key: Option<Decoder>,
}

/// Prints an entry's state: one value, a list, or a map.
fn state_text(d: &StateDecoders, state: &EncodedState) -> String {
    match state {
        EncodedState::Value(v) => d.value.text(v),
        EncodedState::List(items) => {
            let items: Vec<String> = items.iter().map(|i| d.value.text(i)).collect();
            format!("[{}]", items.join(", "))
        }
        EncodedState::Map(pairs) => {
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| map_pair_text(d, k, v)).collect();
            format!("{{{}}}", pairs.join(", "))
        }
    }
}

fn map_pair_text(d: &StateDecoders, k: &[u8], v: &[u8]) -> String {
    let key = d.user_key.as_ref().map_or_else(|| hex(k), |uk| uk.text(k));
    format!("{key}: {}", d.value.text(v))
}

fn state_json(d: &StateDecoders, state: &EncodedState) -> String {
    match state {
        EncodedState::Value(v) => d.value.json(v),
        EncodedState::List(items) => {
            let items: Vec<String> = items.iter().map(|i| d.value.json(i)).collect();
            format!("[{}]", items.join(","))
        }
        // A map as an array of [key, value] pairs: its keys are values of any codec, not
        // only strings.
        EncodedState::Map(pairs) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    let key = d
                        .user_key
                        .as_ref()
                        .map_or_else(|| json_literal(&hex(k)), |uk| uk.json(k));
                    format!("[{key},{}]", d.value.json(v))
                })
                .collect();
            format!("[{}]", pairs.join(","))
        }
    }
}

/// The names of every keyed and operator state of the snapshot.
fn state_names(
    storage: &flowstate::FsCheckpointStorage,
    done: &flowstate::CompletedCheckpoint,
) -> ToolResult<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for task in done.tasks() {
        for source in open_restore_sources(storage, &task.keyed)? {
            names.extend(source.state_metas().into_iter().map(|m| m.name));
        }
        for handle in &task.operator {
            let snapshot = read_operator_state(storage, handle)?;
            names.extend(snapshot.states.iter().map(|(m, _)| m.name.clone()));
        }
    }
    Ok(names)
}

/// `flowstate dump`: the entries of a checkpoint's keyed state, whatever the kind of its
/// handles (canonical files or native LSM snapshots), and its operator state, decoded through
/// their codecs; an unknown `--state` is an error listing the states.
pub fn dump(args: &DumpArgs) -> ToolResult<()> {
    let (storage, done) = load(&args.which)?;
    if let Some(wanted) = &args.state {
        let names = state_names(&storage, &done)?;
        if !names.contains(wanted) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            return Err(format!(
                "no state {wanted:?} in {:?} {}; its states: {}",
                done.kind(),
                done.id().0,
                names.join(", ")
            )
            .into());
        }
    }
    let wanted = |name: &str| args.state.as_deref().is_none_or(|s| s == name);
    let mut printed = 0u64;
    for task in done.tasks() {
        for handle in &task.operator {
            let snapshot = read_operator_state(&storage, handle)?;
            for (meta, data) in &snapshot.states {
                if !wanted(&meta.name) {
                    continue;
                }
                if printed == args.limit {
                    return Ok(());
                }
                let d = StateDecoders {
                    name: meta.name.clone(),
                    namespace: None,
                    value: Decoder::new(&meta.value),
                    user_key: meta.key.as_ref().map(Decoder::new),
                };
                let state = match data {
                    OperatorStateData::List(items) => EncodedState::List(items.clone()),
                    OperatorStateData::Map(map) => {
                        EncodedState::Map(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    }
                };
                if args.json {
                    println!(
                        "{{\"operator\":{},\"subtask\":{},\"state\":{},\"value\":{}}}",
                        json_literal(&task.operator_id),
                        task.subtask_index,
                        json_literal(&d.name),
                        state_json(&d, &state)
                    );
                } else {
                    println!(
                        "operator {}[{}] {} = {}",
                        task.operator_id,
                        task.subtask_index,
                        d.name,
                        state_text(&d, &state)
                    );
                }
                printed += 1;
            }
        }
        for source in open_restore_sources(&storage, &task.keyed)? {
            printed += dump_keyed(&*source, args, &wanted, args.limit - printed)?;
            if printed == args.limit {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Prints at most `limit` entries of one restore source; returns how many it printed.
fn dump_keyed(
    source: &dyn RestoreSource,
    args: &DumpArgs,
    wanted: &dyn Fn(&str) -> bool,
    limit: u64,
) -> ToolResult<u64> {
    let key = Decoder::new(source.key_codec());
    let states: Vec<StateDecoders> = source
        .state_metas()
        .into_iter()
        .map(|m| StateDecoders {
            // A namespace of `unit` (state without one) is not printed.
            namespace: (m.namespace.name != "unit").then(|| Decoder::new(&m.namespace)),
            value: Decoder::new(&m.value),
            user_key: m.user_key.as_ref().map(Decoder::new),
            name: m.name,
        })
        .collect();
    let mut printed = 0u64;
    for kg in source.key_group_range().iter() {
        let mut lines = Vec::new();
        source.read_key_group(kg, &mut |index, e| {
            let Some(d) = states.get(index) else { return };
            if !wanted(&d.name) {
                return;
            }
            lines.push(if args.json {
                let ns = d
                    .namespace
                    .as_ref()
                    .map(|n| format!(",\"namespace\":{}", n.json(&e.namespace)))
                    .unwrap_or_default();
                format!(
                    "{{\"key_group\":{kg},\"state\":{},\"key\":{}{ns},\"value\":{}}}",
                    json_literal(&d.name),
                    key.json(&e.key),
                    state_json(d, &e.state)
                )
            } else {
                let ns = d
                    .namespace
                    .as_ref()
                    .map(|n| format!(" ns {}", n.text(&e.namespace)))
                    .unwrap_or_default();
                format!(
                    "kg {kg:>5} {} key {}{ns} = {}",
                    d.name,
                    key.text(&e.key),
                    state_text(d, &e.state)
                )
            });
        })?;
        for line in lines {
            if printed == limit {
                return Ok(printed);
            }
            println!("{line}");
            printed += 1;
        }
    }
    Ok(printed)
}
