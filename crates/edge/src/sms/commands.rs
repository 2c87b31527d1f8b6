//! Command messages: who may send them (whitelisted numbers), the PIN each ends with, and the
//! RPC each becomes (`PUMP ON 1234` → `pump-station-1` `setPump {"on": true}`). Pure: the
//! connector carries out what [`Commands::check`] decides.

use serde_json::Value;

use crate::config::SmsCommandConfig;

/// A message's words in upper case, single-spaced (how texts are compared).
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A number as compared with the whitelist: `00` read as `+`, spaces and dashes dropped.
pub fn canonical_number(n: &str) -> String {
    let n: String = n
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    match n.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => n,
    }
}

/// What to do with one incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The sender is not whitelisted: no RPC, no answer (an answer would confirm the number
    /// to whoever probes it, and cost an SMS).
    UnknownNumber,
    /// Whitelisted, but the PIN is missing or wrong: no RPC; answered.
    WrongPin,
    /// Whitelisted with the PIN, but no command has these words: answered with the list.
    UnknownCommand(String),
    /// Carry out this RPC.
    Rpc {
        command: String,
        device: String,
        method: String,
        params: Value,
    },
}

/// The `[modem]` command settings.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    allowed: Vec<String>,
    pin: Option<String>,
    commands: Vec<(String, SmsCommandConfig)>,
}

impl Commands {
    pub fn new(allowed: &[String], pin: Option<String>, commands: &[SmsCommandConfig]) -> Self {
        Commands {
            allowed: allowed.iter().map(|n| canonical_number(n)).collect(),
            pin,
            commands: commands
                .iter()
                .map(|c| (normalize(&c.text), c.clone()))
                .collect(),
        }
    }

    /// Whether any command is configured (else incoming messages are only counted).
    pub fn any(&self) -> bool {
        !self.commands.is_empty()
    }

    /// The known commands, for an answer.
    pub fn known(&self) -> String {
        let names: Vec<&str> = self.commands.iter().map(|(t, _)| t.as_str()).collect();
        names.join(", ")
    }

    /// What a message from `from` saying `text` becomes.
    pub fn check(&self, from: &str, text: &str) -> Verdict {
        if !self.allowed.contains(&canonical_number(from)) {
            return Verdict::UnknownNumber;
        }
        let words = normalize(text);
        let (command, pin) = match words.rsplit_once(' ') {
            Some((c, p)) => (c.to_string(), p),
            None => (words.clone(), ""),
        };
        // constant-time enough: the PIN is short and the channel is slow
        if self.pin.as_deref() != Some(pin) {
            return Verdict::WrongPin;
        }
        match self.commands.iter().find(|(t, _)| *t == command) {
            None => Verdict::UnknownCommand(command),
            Some((t, c)) => Verdict::Rpc {
                command: t.clone(),
                device: c.device.clone(),
                method: c.method.clone(),
                params: c.params.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn commands() -> Commands {
        let c = |text: &str, on: bool| SmsCommandConfig {
            text: text.into(),
            device: "pump-station-1".into(),
            method: "setPump".into(),
            params: json!({ "on": on }),
        };
        Commands::new(
            &["+4917012345678".into()],
            Some("1234".into()),
            &[c("PUMP ON", true), c("pump  off", false)],
        )
    }

    #[test]
    fn a_whitelisted_number_with_the_pin_gets_its_rpc() {
        let v = commands().check("+4917012345678", "  pump on 1234 ");
        assert_eq!(
            v,
            Verdict::Rpc {
                command: "PUMP ON".into(),
                device: "pump-station-1".into(),
                method: "setPump".into(),
                params: json!({"on": true})
            }
        );
        assert!(matches!(
            commands().check("004917012345678", "PUMP OFF 1234"),
            Verdict::Rpc { params, .. } if params == json!({"on": false})
        ));
    }

    #[test]
    fn others_are_refused() {
        let c = commands();
        assert_eq!(
            c.check("+4915100000000", "PUMP ON 1234"),
            Verdict::UnknownNumber
        );
        assert_eq!(c.check("+4917012345678", "PUMP ON 9999"), Verdict::WrongPin);
        assert_eq!(c.check("+4917012345678", "PUMP ON"), Verdict::WrongPin);
        assert_eq!(c.check("+4917012345678", "1234"), Verdict::WrongPin);
        assert_eq!(
            c.check("+4917012345678", "PUMP FAST 1234"),
            Verdict::UnknownCommand("PUMP FAST".into())
        );
        assert_eq!(c.known(), "PUMP ON, PUMP OFF");
    }
}
