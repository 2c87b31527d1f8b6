//! Tests of notify.rs: config parsing and checks, numbers and addresses, SMS length, default
//! texts and templates, and the failures without configuration or without a server.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::model::Device;
use crate::rules::compile::Cel;
use crate::rules::model::RuleSpec;
use crate::rules::store::Rule;
use crate::rules::{CompiledRule, Target};

fn job(values: Value) -> Job {
    let spec: RuleSpec = serde_json::from_value(json!({"name": "low stock",
        "scope": {"tenant": true}, "condition": "true", "actions": [{"type": "log"}]}))
    .unwrap();
    let rule = Rule {
        id: "r1".into(),
        tenant: "t".into(),
        spec,
        created: 0,
        updated: 0,
        last_error: None,
        last_error_ts: None,
        last_fired_ts: None,
    };
    let rule = CompiledRule {
        key: 1,
        id: "r1".into(),
        rule,
        target: Target::Tenant,
        condition: Cel::new().compile("condition", "true").unwrap(),
        clear: None,
        for_ms: 0,
        devices: HashMap::new(),
        uses_attributes: false,
        uses_functions: false,
        schedule: None,
    };
    let device = Device {
        id: "d1".into(),
        tenant: "t".into(),
        name: "vending-7".into(),
        label: None,
        profile: "default".into(),
        profile_id: "p".into(),
        customer: None,
        gateway: false,
        parent_gateway: None,
        iccid: None,
        imsi: None,
        msisdn: None,
        created: 0,
    };
    Job {
        rule: Arc::new(rule),
        device: Arc::new(device),
        ts: 1_700_000_000_000,
        values: values.as_object().unwrap().clone(),
        phase: Phase::Fire,
        made: std::time::Instant::now(),
    }
}

fn notify(toml_text: &str) -> std::result::Result<NotifyConfig, toml::de::Error> {
    #[derive(Deserialize)]
    struct Root {
        notify: NotifyConfig,
    }
    toml::from_str::<Root>(toml_text).map(|r| r.notify)
}

#[test]
fn config_defaults_tls_by_credentials_and_refuses_unknown_keys() {
    let c = notify("[notify.smtp]\nhost = \"mail\"\nfrom = \"ib@example.com\"\n").unwrap();
    let smtp = c.smtp.unwrap();
    assert_eq!((smtp.port, smtp.timeout_s), (25, 30));
    assert_eq!(smtp.tls_mode(), SmtpTls::None);
    let c = notify(
        "[notify.smtp]\nhost = \"mail\"\nport = 587\nfrom = \"Ironbridge <ib@example.com>\"\n\
         username = \"ib\"\npassword = \"pw\"\n[notify.sms]\nvia = \"email\"\n\
         domain = \"sms.example.com\"\n",
    )
    .unwrap();
    assert_eq!(c.smtp.as_ref().unwrap().tls_mode(), SmtpTls::Starttls);
    assert!(
        !format!("{c:?}").contains("pw"),
        "the password stays out of logs"
    );
    assert_eq!(
        c.sms,
        Some(SmsConfig::Email {
            domain: "sms.example.com".into(),
            subject: String::new()
        })
    );
    c.build().unwrap();
    let c =
        notify("[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\nusername = \"u\"\ntls = \"tls\"\n");
    assert_eq!(c.unwrap().smtp.unwrap().tls_mode(), SmtpTls::Tls);
    for bad in [
        "[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\nsecure = true\n",
        "[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\ntls = \"ssl\"\n",
        "[notify.smtp]\nfrom = \"a@b.c\"\n",
        "[notify.sms]\nvia = \"pigeon\"\n",
        "[notify.sms]\nvia = \"email\"\ndomain = \"d.e\"\nport = 1\n",
        "[notify.fax]\n",
    ] {
        assert!(notify(bad).is_err(), "{bad}");
    }
}

#[test]
fn build_refuses_bad_settings() {
    let err = |t: &str| notify(t).unwrap().build().err().unwrap().to_string();
    assert!(err("[notify.smtp]\nhost = \"m\"\nfrom = \"not an address\"\n").contains("from"));
    assert!(err("[notify.sms]\nvia = \"email\"\ndomain = \"s.e\"\n").contains("[notify.smtp]"));
    let e = err("[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\n[notify.sms]\nvia = \"email\"\ndomain = \"a b\"\n");
    assert!(e.contains("domain"), "{e}");
    assert!(
        err("[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\npassword = \"p\"\n")
            .contains("username")
    );
    let none = NotifyConfig::default().build().unwrap();
    assert!(none.mailer.is_none() && none.sms.is_none());
}

#[test]
fn numbers_and_addresses() {
    for ok in ["+4917012345678", "+1234567", "+123456789012345"] {
        assert!(valid_e164(ok), "{ok}");
    }
    for bad in [
        "4917012345678",
        "+123456",
        "+1234567890123456",
        "+49 170 1234567",
        "+0123456789",
        "+49170x2345678",
        "",
        "+",
    ] {
        assert!(!valid_e164(bad), "{bad}");
    }
    assert!(valid_email("ops@example.com") && valid_email("Ops <ops@example.com>"));
    assert!(!valid_email("ops") && !valid_email("ops@") && !valid_email(""));
}

#[test]
fn sms_texts_fit_one_message() {
    assert_eq!(fit_sms("stock 8%"), ("stock 8%".into(), false));
    let (t, cut) = fit_sms(&"a".repeat(200));
    assert_eq!((t.chars().count(), cut), (160, true));
    assert!(!fit_sms(&"a".repeat(160)).1);
    // Extension characters take two septets.
    let (t, cut) = fit_sms(&"€".repeat(81));
    assert_eq!((t.chars().count(), cut), (80, true));
    // Outside the GSM alphabet: UCS-2, 70 units.
    let (t, cut) = fit_sms(&format!("20°C {}", "b".repeat(100)));
    assert_eq!((t.chars().count(), cut), (70, true));
    assert!(t.starts_with("20°C"));
}

#[test]
fn templates_and_default_texts() {
    let j = job(json!({"stock_pct": 8.0, "site": "Hall 2"}));
    assert_eq!(
        render("{{device.name}}: stock {{stock_pct}}%", &j),
        "vending-7: stock 8.0%"
    );
    assert_eq!(default_subject(&j), "Rule low stock fired on vending-7");
    let body = default_body(&j);
    assert!(
        body.starts_with("Rule low stock fired on vending-7.\n"),
        "{body}"
    );
    assert!(body.contains("Time: 2023-11-14T22:13:20.000Z"), "{body}");
    assert!(body.contains("  stock_pct = 8.0\n") && body.contains("  site = Hall 2\n"));
    assert_eq!(one_line("a\r\nBcc: x"), "a  Bcc: x");
}

#[test]
fn gateway_address_is_the_digits_at_the_domain() {
    let c = notify("[notify.smtp]\nhost = \"m\"\nfrom = \"a@b.c\"\n").unwrap();
    let mailer = Arc::new(Mailer::new(c.smtp.as_ref().unwrap()).unwrap());
    let gw = EmailToSms::new(mailer, " sms.example.com ", "").unwrap();
    let a = gw.address("+4917012345678").unwrap();
    assert_eq!(a.email.to_string(), "4917012345678@sms.example.com");
}

#[tokio::test]
async fn without_configuration_the_actions_fail_clearly() {
    let j = job(json!({"stock_pct": 8.0}));
    let email = Action::Email {
        to: vec!["ops@example.com".into()],
        subject: None,
        body: None,
    };
    assert_eq!(EmailAction(None).run(&j, &email).await, Err(NO_SMTP.into()));
    let sms = Action::Sms {
        to: "+4917012345678".into(),
        text: None,
    };
    assert_eq!(SmsAction(None).run(&j, &sms).await, Err(NO_SMS.into()));
    assert!(EmailAction(None).run(&j, &sms).await.is_err());
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_panic() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = notify(&format!(
        "[notify.smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"a@b.c\"\ntimeout_s = 2\n"
    ))
    .unwrap();
    let n = c.build().unwrap();
    let j = job(json!({}));
    let email = Action::Email {
        to: vec!["ops@example.com".into()],
        subject: Some("{{device.name}}".into()),
        body: None,
    };
    let e = EmailAction(n.mailer).run(&j, &email).await.unwrap_err();
    assert!(e.starts_with("smtp:"), "{e}");
}

#[test]
fn modem_config_defaults_and_checks() {
    let c = notify("[notify.sms]\nvia = \"modem\"\nport = \"/dev/ttyUSB0\"\n").unwrap();
    let Some(SmsConfig::Modem {
        baud,
        mode,
        max_parts,
        status_reports,
        pin,
        ..
    }) = c.sms.clone()
    else {
        panic!("{c:?}")
    };
    assert_eq!(
        (baud, mode.as_str(), max_parts, status_reports, pin),
        (115_200, "pdu", 4, true, None)
    );
    // outside a runtime it says so instead of panicking
    assert!(c.build().err().unwrap().to_string().contains("runtime"));
    let err = |t: &str| notify(t).unwrap().build().err().unwrap().to_string();
    let base = "[notify.sms]\nvia = \"modem\"\nport = \"/dev/x\"\n";
    assert!(err(&format!("{base}mode = \"fax\"\n")).contains("mode"));
    assert!(err(&format!("{base}pin = \"12a4\"\n")).contains("pin"));
    assert!(err(&format!("{base}max_parts = 0\n")).contains("max_parts"));
    assert!(notify(&format!("{base}domain = \"x\"\n")).is_err());
}

#[tokio::test]
async fn sms_actions_go_through_the_modem() {
    use modem::service::{Opener, Port};
    use modem::sim::{self, SimConfig, SimEvent};
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    let sims: Arc<Mutex<Vec<mpsc::UnboundedReceiver<SimEvent>>>> = Arc::default();
    let s2 = sims.clone();
    let opener: Opener = Arc::new(move || {
        let sims = s2.clone();
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(4096);
            let (_control, rx) = mpsc::unbounded_channel();
            let (tx, events) = mpsc::unbounded_channel();
            // the control sender is dropped: the simulator runs until the stream closes
            tokio::spawn(async move {
                let _keep = _control;
                sim::run(b, SimConfig::default(), rx, tx).await
            });
            sims.lock().unwrap().push(events);
            Ok(Box::new(a) as Box<dyn Port>)
        })
    });
    let settings = modem::Settings {
        command_timeout: Duration::from_millis(500),
        ..modem::Settings::default()
    };
    let (handle, _events) =
        modem::service::spawn("t".into(), opener, settings, Duration::from_secs(60));
    let sender: Arc<dyn SmsSender> = Arc::new(ModemSms::new(handle, 2));
    let action = SmsAction(Some(sender));
    let a = Action::Sms {
        to: "+4917012345678".into(),
        text: Some("{{device.name}}: stock {{stock_pct}}% ".to_string() + &"x".repeat(400)),
    };
    action
        .run(&job(json!({"stock_pct": 8.0})), &a)
        .await
        .unwrap();
    let mut events = sims.lock().unwrap().remove(0);
    let (to, text, parts) = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(SimEvent::Message { to, text, parts })) => break (to, text, parts),
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((to.as_str(), parts), ("+4917012345678", 2));
    assert!(text.starts_with("vending-7: stock 8.0% xxx"), "{text}");
    assert_eq!(text.chars().count(), 2 * 153, "cut to two parts");
    let fit = super::modem_sms::fit_parts;
    assert_eq!(fit("short", 1), ("short".to_string(), false));
    assert_eq!(fit(&"ж".repeat(100), 1).0.chars().count(), 67);
}
