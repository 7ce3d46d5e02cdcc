use super::*;

fn name(text: &str) -> Vec<u8> {
    let mut wire = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    wire
}

#[test]
fn key_lowercases_the_name_and_packs_type_and_bits() {
    let bits = QueryBits {
        edns: true,
        dnssec_ok: true,
        checking_disabled: false,
        authentic_data: true,
    };
    let key = AnswerKey::new(3, &name("WwW.ExAmple.COM"), 28, bits).unwrap();
    let wire = name("www.example.com");
    assert_eq!(&key.bytes()[..wire.len()], &wire[..]);
    assert!(
        key.bytes()[wire.len()..KEY_QNAME_LEN]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(&key.bytes()[KEY_QNAME_LEN..], &[0, 28, 0b1011, 3]);
    // And read back.
    assert_eq!(key.qname(), &wire[..]);
    assert_eq!((key.qtype(), key.bits()), (28, bits));
    let root = AnswerKey::new(0, b"\0", 1, QueryBits::default()).unwrap();
    assert_eq!((root.qname(), root.qtype()), (&b"\0"[..], 1));
    assert_eq!(
        key,
        AnswerKey::new(3, &name("www.example.com"), 28, bits).unwrap()
    );
    assert_ne!(
        key,
        AnswerKey::new(0, &name("www.example.com"), 28, bits).unwrap()
    );
    assert_ne!(
        key,
        AnswerKey::new(0, &name("www.example.com"), 28, QueryBits::default()).unwrap()
    );
}

#[test]
fn key_refuses_malformed_names() {
    let bits = QueryBits::default();
    // A compression pointer, a missing root label, trailing bytes, 256 bytes.
    assert!(AnswerKey::new(0, &[0xc0, 12], 1, bits).is_err());
    assert!(AnswerKey::new(0, &[3, b'c', b'o', b'm'], 1, bits).is_err());
    assert!(AnswerKey::new(0, &[0, 0], 1, bits).is_err());
    let mut long = Vec::new();
    for _ in 0..4 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.push(0);
    assert_eq!(long.len(), 257);
    assert!(AnswerKey::new(0, &long, 1, bits).is_err());
    // The longest legal name: 255 bytes.
    let mut longest = Vec::new();
    for _ in 0..3 {
        longest.push(63);
        longest.extend_from_slice(&[b'a'; 63]);
    }
    longest.push(61);
    longest.extend_from_slice(&[b'a'; 61]);
    longest.push(0);
    assert_eq!(longest.len(), 255);
    assert!(AnswerKey::new(0, &longest, 1, bits).is_ok());
}

/// A response for a.example A: `records` A records (owner a pointer to the question, TTL
/// 300) and an OPT record; flags QR AA RD RA CD.
fn response(records: u16) -> Vec<u8> {
    let mut response = vec![0x12, 0x34, 0x85, 0x90, 0, 1];
    response.extend_from_slice(&records.to_be_bytes());
    response.extend_from_slice(&[0, 0, 0, 1]);
    response.extend_from_slice(&name("a.example"));
    response.extend_from_slice(&[0, 1, 0, 1]);
    for last in 0..records {
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2]);
        response.push(last as u8);
    }
    // OPT: payload 1232, DO.
    response.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0x80, 0, 0, 0]);
    response
}

const QUESTION_END: usize = 12 + 11 + 4;

#[test]
fn answer_holds_lifetime_flags_counts_ttl_offsets_and_the_bytes_after_the_question() {
    let response = response(2);
    let lifetime = Lifetime {
        stored_ns: 5_000_000_000,
        ttl: 300,
        keep_ttls: false,
    };
    let answer = Answer::new(&response, lifetime).unwrap();
    let bytes = answer.bytes();
    let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    let u16_at = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
    assert_eq!(u64_at(0), 305_000_000_000, "expiry");
    assert_eq!(u64_at(8), 5_000_000_000, "stored at");
    assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 300);
    let data = &response[QUESTION_END..];
    assert_eq!(&bytes[20..24], &[0; 4], "the slot is the loader's");
    assert_eq!(usize::from(u16_at(24)), data.len());
    // RD (0x0100) and CD (0x0010) are the client's: cleared here.
    assert_eq!(&bytes[26..28], &[0x84, 0x80]);
    assert_eq!(&bytes[28..34], &[0, 2, 0, 0, 0, 1]);
    // Two TTLs (the OPT's "TTL" is its flags: not one), at 6 and 22 in the data.
    assert_eq!(bytes[34], 2);
    assert_eq!((u16_at(40), u16_at(42), u16_at(44)), (6, 22, 0));
    assert_eq!(&data[6..10], &300u32.to_be_bytes());
    assert_eq!(
        &bytes[VALUE_HEADER_LEN..VALUE_HEADER_LEN + data.len()],
        data
    );
    assert!(
        bytes[VALUE_HEADER_LEN + data.len()..]
            .iter()
            .all(|&b| b == 0)
    );

    let kept = Answer::new(
        &response,
        Lifetime {
            keep_ttls: true,
            ..lifetime
        },
    )
    .unwrap();
    assert_eq!(kept.bytes()[34], 0, "keepttl: no TTL to rewrite");
}

#[test]
fn answer_refuses_what_the_program_cannot_send() {
    let lifetime = Lifetime {
        stored_ns: 0,
        ttl: 30,
        keep_ttls: false,
    };
    let whole = response(1);
    assert!(Answer::new(&whole, lifetime).is_ok());
    // Cut inside the header, the question, a record.
    for cut in [11, 20, QUESTION_END + 5] {
        assert!(
            Answer::new(&whole[..cut], lifetime).is_err(),
            "cut at {cut}"
        );
    }
    // Two questions.
    let mut two = whole.clone();
    two[5] = 2;
    assert!(Answer::new(&two, lifetime).is_err());
    // More records than TTL slots, and more bytes than the data field.
    assert!(Answer::new(&response(MAX_TTLS as u16), lifetime).is_ok());
    assert!(Answer::new(&response(MAX_TTLS as u16 + 1), lifetime).is_err());
    let mut long = whole.clone();
    long[11] = 2; // a second additional record: a TXT of 1000 bytes
    long.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 0, 0x03, 0xe8]);
    long.extend(std::iter::repeat_n(0u8, 1000));
    assert!(Answer::new(&long, lifetime).is_err());
}

#[test]
fn boot_clock_moves_forward() {
    let first = boot_time_ns().unwrap();
    let second = boot_time_ns().unwrap();
    assert!(first > 0 && second >= first);
}
