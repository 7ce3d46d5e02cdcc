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
    let key = AnswerKey::new(&name("WwW.ExAmple.COM"), 28, bits).unwrap();
    let wire = name("www.example.com");
    assert_eq!(&key.bytes()[..wire.len()], &wire[..]);
    assert!(
        key.bytes()[wire.len()..KEY_QNAME_LEN]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(&key.bytes()[KEY_QNAME_LEN..], &[0, 28, 0b1011, 0]);
    assert_eq!(
        key,
        AnswerKey::new(&name("www.example.com"), 28, bits).unwrap()
    );
    assert_ne!(
        key,
        AnswerKey::new(&name("www.example.com"), 28, QueryBits::default()).unwrap()
    );
}

#[test]
fn key_refuses_malformed_names() {
    let bits = QueryBits::default();
    // A compression pointer, a missing root label, trailing bytes, 256 bytes.
    assert!(AnswerKey::new(&[0xc0, 12], 1, bits).is_err());
    assert!(AnswerKey::new(&[3, b'c', b'o', b'm'], 1, bits).is_err());
    assert!(AnswerKey::new(&[0, 0], 1, bits).is_err());
    let mut long = Vec::new();
    for _ in 0..4 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.push(0);
    assert_eq!(long.len(), 257);
    assert!(AnswerKey::new(&long, 1, bits).is_err());
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
    assert!(AnswerKey::new(&longest, 1, bits).is_ok());
}

#[test]
fn answer_holds_flags_counts_and_the_bytes_after_the_question() {
    // ID 0x1234; QR AA RD RA CD, NOERROR; 1 question, 2 answers, 0 authority, 1 additional.
    let mut response = vec![0x12, 0x34, 0x85, 0x90, 0, 1, 0, 2, 0, 0, 0, 1];
    response.extend_from_slice(&name("a.example"));
    response.extend_from_slice(&[0, 1, 0, 1]);
    let after: Vec<u8> = (0..40).collect();
    response.extend_from_slice(&after);
    let answer = Answer::from_response(&response, 77).unwrap();
    let bytes = answer.bytes();
    assert_eq!(u64::from_ne_bytes(bytes[0..8].try_into().unwrap()), 77);
    assert_eq!(u16::from_ne_bytes([bytes[8], bytes[9]]), 40);
    // RD (0x0100) and CD are the client's: cleared here.
    assert_eq!(&bytes[10..12], &[0x84, 0x80]);
    assert_eq!(&bytes[12..18], &[0, 2, 0, 0, 0, 1]);
    assert_eq!(&bytes[VALUE_HEADER_LEN..VALUE_HEADER_LEN + 40], &after[..]);
    assert!(bytes[VALUE_HEADER_LEN + 40..].iter().all(|&b| b == 0));
}

#[test]
fn answer_refuses_what_the_program_cannot_send() {
    let mut header = vec![0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    assert!(Answer::from_response(&header[..11], 0).is_err());
    // No question end.
    header.extend_from_slice(&name("a.example"));
    assert!(Answer::from_response(&header, 0).is_err());
    header.extend_from_slice(&[0, 1, 0, 1]);
    assert!(Answer::from_response(&header, 0).is_ok());
    // Too long after the question.
    let mut long = header.clone();
    long.extend(std::iter::repeat_n(0u8, MAX_ANSWER_DATA + 1));
    assert!(Answer::from_response(&long, 0).is_err());
    // Two questions.
    header[5] = 2;
    assert!(Answer::from_response(&header, 0).is_err());
}

#[test]
fn boot_clock_moves_forward() {
    let first = boot_time_ns().unwrap();
    let second = boot_time_ns().unwrap();
    assert!(first > 0 && second >= first);
}
