//! From a captured frame to its IP header, by link type.

/// LINKTYPE_ values the reader understands.
pub(crate) mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW_12: u32 = 12;
    pub const RAW_14: u32 = 14;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the pre-standard QinQ tags.
const VLAN_TAGS: [u16; 4] = [0x8100, 0x88a8, 0x9100, 0x9200];
/// Tags stacked deeper than this are not a frame we want.
const MAX_TAGS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The frame carries something other than IP, or the link type is
    /// unknown.
    NotIp,
    /// The frame ends inside its link-layer header.
    Short,
}

/// The IP packet inside `frame` (the bytes from its IP header on).
pub(crate) fn network(linktype: u32, frame: &[u8]) -> Result<&[u8], LinkError> {
    use linktype::*;
    match linktype {
        ETHERNET => ethertype_payload(frame, 12, 14),
        LINUX_SLL => ethertype_payload(frame, 14, 16),
        LINUX_SLL2 => ethertype_payload(frame, 0, 20),
        RAW | RAW_12 | RAW_14 | IPV4 | IPV6 => by_version(frame),
        // The address family in host (NULL) or network (LOOP) order; the
        // IP version nibble says the same thing on every platform.
        NULL | LOOP => by_version(frame.get(4..).ok_or(LinkError::Short)?),
        _ => Err(LinkError::NotIp),
    }
}

fn be16(frame: &[u8], at: usize) -> Result<u16, LinkError> {
    match frame.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(LinkError::Short),
    }
}

/// A link header whose EtherType is at `type_at` and whose payload starts at
/// `header_len`, followed by any VLAN tags.
fn ethertype_payload(frame: &[u8], type_at: usize, header_len: usize) -> Result<&[u8], LinkError> {
    if frame.len() < header_len {
        return Err(LinkError::Short);
    }
    let mut ethertype = be16(frame, type_at)?;
    let mut at = header_len;
    for _ in 0..MAX_TAGS {
        if !VLAN_TAGS.contains(&ethertype) {
            break;
        }
        // Tag control information, then the next EtherType.
        ethertype = be16(frame, at + 2)?;
        at += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => frame.get(at..).ok_or(LinkError::Short),
        _ => Err(LinkError::NotIp),
    }
}

fn by_version(packet: &[u8]) -> Result<&[u8], LinkError> {
    match packet.first().map(|b| b >> 4) {
        None => Err(LinkError::Short),
        Some(4 | 6) => Ok(packet),
        Some(_) => Err(LinkError::NotIp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ip_under_each_link_type() {
        let ip = [0x45u8, 0, 0, 20];
        let eth = [&[0u8; 12][..], &[0x08, 0x00], &ip].concat();
        assert_eq!(network(linktype::ETHERNET, &eth), Ok(&ip[..]));
        let qinq = [
            &[0u8; 12][..],
            &[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd],
            &ip,
        ]
        .concat();
        assert_eq!(network(linktype::ETHERNET, &qinq), Ok(&ip[..]));
        let sll = [&[0u8; 14][..], &[0x08, 0x00], &ip].concat();
        assert_eq!(network(linktype::LINUX_SLL, &sll), Ok(&ip[..]));
        let sll2 = [&[0x08u8, 0x00][..], &[0; 18], &ip].concat();
        assert_eq!(network(linktype::LINUX_SLL2, &sll2), Ok(&ip[..]));
        assert_eq!(network(linktype::RAW, &ip), Ok(&ip[..]));
        let null = [&[2u8, 0, 0, 0][..], &ip].concat();
        assert_eq!(network(linktype::NULL, &null), Ok(&ip[..]));
    }

    #[test]
    fn refuses_what_is_not_ip() {
        let arp = [&[0u8; 12][..], &[0x08, 0x06], &[0; 28]].concat();
        assert_eq!(network(linktype::ETHERNET, &arp), Err(LinkError::NotIp));
        assert_eq!(network(linktype::ETHERNET, &[0; 13]), Err(LinkError::Short));
        let cut_tag = [&[0u8; 12][..], &[0x81, 0x00, 0]].concat();
        assert_eq!(network(linktype::ETHERNET, &cut_tag), Err(LinkError::Short));
        assert_eq!(network(linktype::RAW, &[]), Err(LinkError::Short));
        assert_eq!(network(linktype::RAW, &[0x12]), Err(LinkError::NotIp));
        assert_eq!(network(9999, &[0x45]), Err(LinkError::NotIp));
    }
}
