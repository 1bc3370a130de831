//! Raw mirrors of the public headers: `sspi.h`, `schannel.h`, `winerror.h`.
//!
//! Names follow the headers exactly, so a reader can hold this module beside
//! them. Everything here is declared through the recording macros in [`abi`],
//! which is how the conformance check covers all of it.

pub mod abi;
pub mod ffi;
pub mod schannel;
pub mod types;

pub use schannel::*;
pub use types::*;

/// `UNISP_NAME_W` (schannel.h): the package name kernel Schannel answers to.
pub const UNISP_NAME: &str = "Microsoft Unified Security Protocol Provider";

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    // Sizes and offsets of the C structures on x64, as sspi.h and schannel.h lay
    // them out (the clang check in scripts/abi-check.sh compares all of them
    // with the headers; these pin the ones the handshake depends on).
    #[test]
    fn buffer_layouts_match_the_x64_c_structures() {
        assert_eq!(size_of::<SecHandle>(), 16);
        assert_eq!(size_of::<SecBuffer>(), 16);
        assert_eq!(offset_of!(SecBuffer, BufferType), 4);
        assert_eq!(offset_of!(SecBuffer, pvBuffer), 8);
        assert_eq!(size_of::<SecBufferDesc>(), 16);
        assert_eq!(offset_of!(SecBufferDesc, cBuffers), 4);
        assert_eq!(offset_of!(SecBufferDesc, pBuffers), 8);
        assert_eq!(size_of::<TimeStamp>(), 8);
        assert_eq!(size_of::<UNICODE_STRING>(), 16);
        assert_eq!(offset_of!(UNICODE_STRING, Buffer), 8);
        assert_eq!(size_of::<SecPkgContext_StreamSizes>(), 20);
        assert_eq!(size_of::<SEC_APPLICATION_PROTOCOL_LIST>(), 8);
        assert_eq!(
            offset_of!(SEC_APPLICATION_PROTOCOL_LIST, ProtocolListSize),
            4
        );
        assert_eq!(SEC_APPLICATION_PROTOCOL_LIST_HEADER, 6);
        assert_eq!(size_of::<SEC_APPLICATION_PROTOCOLS>(), 12);
        assert_eq!(SEC_APPLICATION_PROTOCOLS_HEADER, 4);
        assert_eq!(size_of::<SecPkgContext_ApplicationProtocol>(), 264);
        assert_eq!(
            offset_of!(SecPkgContext_ApplicationProtocol, ProtocolIdSize),
            8
        );
        assert_eq!(offset_of!(SecPkgContext_ApplicationProtocol, ProtocolId), 9);
    }

    #[test]
    fn schannel_credential_layouts_match_the_x64_c_structures() {
        assert_eq!(size_of::<SCH_CREDENTIALS>(), 72);
        assert_eq!(offset_of!(SCH_CREDENTIALS, paCred), 16);
        assert_eq!(offset_of!(SCH_CREDENTIALS, dwFlags), 52);
        assert_eq!(offset_of!(SCH_CREDENTIALS, pTlsParameters), 64);
        assert_eq!(size_of::<TLS_PARAMETERS>(), 40);
        assert_eq!(offset_of!(TLS_PARAMETERS, grbitDisabledProtocols), 16);
        assert_eq!(size_of::<SCHANNEL_CERT_HASH_STORE>(), 296);
        assert_eq!(offset_of!(SCHANNEL_CERT_HASH_STORE, ShaHash), 16);
        assert_eq!(offset_of!(SCHANNEL_CERT_HASH_STORE, pwszStoreName), 36);
        assert_eq!(size_of::<SecurityFunctionTableW>(), 8 + 31 * 8);
        assert_eq!(offset_of!(SecurityFunctionTableW, EncryptMessage), 25 * 8);
        assert_eq!(offset_of!(SecurityFunctionTableW, DecryptMessage), 26 * 8);
    }

    #[test]
    fn helpers_build_what_the_headers_describe() {
        assert!(!SecHandle::INVALID.is_valid());
        assert!(SecHandle {
            dwLower: 1,
            dwUpper: 2
        }
        .is_valid());
        let mut bufs = [
            SecBuffer::empty(SECBUFFER_TOKEN),
            SecBuffer::empty(SECBUFFER_EMPTY),
        ];
        let desc = SecBufferDesc::new(&mut bufs);
        assert_eq!((desc.ulVersion, desc.cBuffers), (SECBUFFER_VERSION, 2));
        let ro = SecBuffer {
            BufferType: SECBUFFER_TOKEN | SECBUFFER_READONLY,
            ..bufs[0]
        };
        assert_eq!(ro.kind(), SECBUFFER_TOKEN);
        let store = SCHANNEL_CERT_HASH_STORE::new([7; 20], "MY", true);
        assert_eq!(
            store.dwLength as usize,
            size_of::<SCHANNEL_CERT_HASH_STORE>()
        );
        assert_eq!(store.dwFlags, SCH_MACHINE_CERT_HASH);
        assert_eq!(
            &store.pwszStoreName[..3],
            &[u16::from(b'M'), u16::from(b'Y'), 0]
        );
        let mut long = [0u16; 40_000];
        assert!(UNICODE_STRING::from_units(&mut long).is_none());
        let mut name = [u16::from(b'a'); 4];
        assert_eq!(UNICODE_STRING::from_units(&mut name).unwrap().Length, 8);
    }

    #[test]
    fn the_abi_record_covers_every_declaration() {
        let structs: std::vec::Vec<_> = abi::structs().map(|s| s.c_name).collect();
        for name in [
            "SecHandle",
            "SecBuffer",
            "SecBufferDesc",
            "TimeStamp",
            "SCH_CREDENTIALS",
            "TLS_PARAMETERS",
            "SCHANNEL_CERT_HASH_STORE",
            "SecurityFunctionTableW",
        ] {
            assert!(structs.contains(&name), "{name} is not recorded");
        }
        assert!(abi::structs().all(|s| !s.fields.is_empty()));
        assert!(abi::constants().any(|c| c.c_name == "SEC_I_ASYNC_CALL_PENDING"));
        assert!(abi::constants().any(|c| c.c_name == "ASC_REQ_EXTENDED_ERROR"));
        let fns: std::vec::Vec<_> = abi::prototypes().map(|p| p.name).collect();
        // The ten async functions ksecdd exports; SspiAsyncContextRequiresNotify
        // is resolved at run time, never imported.
        assert_eq!(fns.iter().filter(|n| n.starts_with("Sspi")).count(), 10);
        assert!(!fns.contains(&"SspiAsyncContextRequiresNotify"));
    }
}
