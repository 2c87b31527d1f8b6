use super::*;
use proptest::prelude::*;

fn text(coding: Coding, text: &str) -> UserData {
    UserData {
        coding,
        concat: None,
        text: text.into(),
    }
}

#[test]
fn submit_matches_the_well_known_example() {
    let s = Submit {
        reference: 0,
        to: "+46708251358".into(),
        status_report: false,
        validity: Some(0xAA),
        data: text(Coding::Gsm7, "hellohello"),
    };
    let pdu = encode_submit(&s).unwrap();
    assert_eq!(hex(&pdu), "11000B916407281553F80000AA0AE8329BFD4697D9EC37");
    assert_eq!(decode_submit(&pdu).unwrap(), s);
}

#[test]
fn deliver_with_a_service_centre_decodes() {
    let pdu =
        unhex("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37").unwrap();
    let (smsc, tpdu) = split_sca(&pdu).unwrap();
    assert_eq!(smsc.as_deref(), Some("+27381000015"));
    let Incoming::Deliver(d) = decode_incoming(tpdu).unwrap() else {
        panic!("not a deliver")
    };
    assert_eq!(d.from, "27838890001");
    assert_eq!(d.data.text, "hellohello");
    let t = d.timestamp;
    assert_eq!(
        (
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.tz_quarters
        ),
        (99, 3, 29, 15, 16, 59, 8)
    );
}

#[test]
fn concatenated_ucs2_and_gsm7_parts_round_trip() {
    for coding in [Coding::Gsm7, Coding::Ucs2] {
        for reference in [7u16, 300] {
            let d = Deliver {
                from: "+4917012345678".into(),
                timestamp: Timestamp {
                    year: 26,
                    month: 11,
                    day: 26,
                    hour: 18,
                    minute: 5,
                    second: 0,
                    tz_quarters: -20,
                },
                status_report: false,
                data: UserData {
                    coding,
                    concat: Some(Concat {
                        reference,
                        total: 3,
                        seq: 2,
                    }),
                    text: "x".repeat(60),
                },
            };
            let pdu = encode_deliver(&d).unwrap();
            assert_eq!(decode_incoming(&pdu).unwrap(), Incoming::Deliver(d));
        }
    }
}

#[test]
fn a_full_gsm7_part_fills_the_message() {
    let d = UserData {
        coding: Coding::Gsm7,
        concat: Some(Concat {
            reference: 1,
            total: 2,
            seq: 1,
        }),
        text: "a".repeat(153),
    };
    let (udl, ud) = encode_user_data(&d).unwrap();
    assert_eq!((udl, ud.len()), (160, 140));
    let too_long = UserData {
        text: "a".repeat(154),
        ..d
    };
    assert_eq!(encode_user_data(&too_long), Err(PduError::TooLong(161)));
}

#[test]
fn status_reports_say_delivered_or_not() {
    let s = StatusReport {
        reference: 42,
        recipient: "+4917012345678".into(),
        timestamp: Timestamp::default(),
        discharge: Timestamp::default(),
        status: 0,
    };
    let pdu = encode_status_report(&s).unwrap();
    assert_eq!(
        decode_incoming(&pdu).unwrap(),
        Incoming::StatusReport(s.clone())
    );
    assert_eq!(s.delivered(), Some(true));
    assert_eq!(
        StatusReport {
            status: 0x30,
            ..s.clone()
        }
        .delivered(),
        None
    );
    assert_eq!(StatusReport { status: 0x41, ..s }.delivered(), Some(false));
}

#[test]
fn alphanumeric_senders_and_bad_input() {
    // "Vodafone" as a sender name: TOA D0, 14 semi-octets
    let mut f = vec![14, 0xD0];
    f.extend(gsm7::pack(&gsm7::encode("Vodafone").unwrap(), 0));
    assert_eq!(
        decode_address(&mut Reader { bytes: &f }).unwrap(),
        "Vodafone"
    );
    assert!(encode_address("+49 170").is_err());
    assert!(encode_address("").is_err());
    assert!(unhex("0G").is_err());
    assert!(unhex("ABC").is_err());
    assert_eq!(
        decode_incoming(&[]),
        Err(PduError::Truncated("first octet"))
    );
    assert!(matches!(
        decode_incoming(&[0x01]),
        Err(PduError::UnexpectedType(1))
    ));
    assert!(decode_incoming(&[0x44, 0x01, 0x91, 0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7]).is_err());
}

fn arb_user_data() -> impl Strategy<Value = UserData> {
    let concat = proptest::option::of((any::<u16>(), 1u8..=255).prop_flat_map(|(r, total)| {
        (1..=total).prop_map(move |seq| Concat {
            reference: r,
            total,
            seq,
        })
    }));
    (
        prop_oneof![Just(Coding::Gsm7), Just(Coding::Ucs2), Just(Coding::Data8)],
        concat,
        "[ -_a-~äöü€]{0,60}",
        "\\PC{0,30}",
    )
        .prop_map(|(coding, concat, gsm, any)| UserData {
            coding,
            concat,
            text: match coding {
                Coding::Gsm7 => gsm,
                Coding::Ucs2 => any,
                Coding::Data8 => gsm.chars().filter(|c| (*c as u32) < 256).collect(),
            },
        })
}

fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (
        0u8..100,
        1u8..13,
        1u8..32,
        0u8..24,
        0u8..60,
        0u8..60,
        -79i8..80,
    )
        .prop_map(
            |(year, month, day, hour, minute, second, tz_quarters)| Timestamp {
                year,
                month,
                day,
                hour,
                minute,
                second,
                tz_quarters,
            },
        )
}

const NUMBER: &str = "\\+?[0-9*#]{1,20}";

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_incoming(&bytes);
        let _ = decode_submit(&bytes);
        if let Ok((_, tpdu)) = split_sca(&bytes) {
            let _ = decode_incoming(tpdu);
        }
    }

    #[test]
    fn submit_round_trips(to in NUMBER, reference: u8, status_report: bool,
                          validity in proptest::option::of(any::<u8>()), data in arb_user_data()) {
        let s = Submit { reference, to, status_report, validity, data };
        let pdu = encode_submit(&s).unwrap();
        prop_assert_eq!(decode_submit(&pdu).unwrap(), s);
    }

    #[test]
    fn deliver_round_trips(from in NUMBER, timestamp in arb_timestamp(), status_report: bool,
                           data in arb_user_data()) {
        let d = Deliver { from, timestamp, status_report, data };
        let pdu = encode_deliver(&d).unwrap();
        let mut with_sca = vec![0];
        with_sca.extend(&pdu);
        let (_, tpdu) = split_sca(&with_sca).unwrap();
        prop_assert_eq!(decode_incoming(tpdu).unwrap(), Incoming::Deliver(d));
    }

    #[test]
    fn status_report_round_trips(reference: u8, recipient in NUMBER, timestamp in arb_timestamp(),
                                 discharge in arb_timestamp(), status: u8) {
        let s = StatusReport { reference, recipient, timestamp, discharge, status };
        let pdu = encode_status_report(&s).unwrap();
        prop_assert_eq!(decode_incoming(&pdu).unwrap(), Incoming::StatusReport(s));
    }

    #[test]
    fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    }
}
