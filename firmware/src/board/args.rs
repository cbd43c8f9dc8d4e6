//! The program's semihosting arguments (QEMU's `-semihosting-config arg=...`).

/// `true` if one of the arguments is `flag`.
#[inline(never)]
pub fn has(flag: &str) -> bool {
    let Ok(args) = semihosting::experimental::env::args::<256>() else {
        return false;
    };
    (&args).into_iter().any(|a| a == Ok(flag))
}

/// The rest of the first argument that starts with `prefix` (`flash=` of `flash=PATH`),
/// NUL-terminated in 128 bytes; `None` if there is none or it does not fit.
#[inline(never)]
pub fn value(prefix: &str) -> Option<[u8; 128]> {
    let args = semihosting::experimental::env::args::<256>().ok()?;
    let value = (&args)
        .into_iter()
        .find_map(|a| a.ok().and_then(|a| a.strip_prefix(prefix)))?;
    let mut out = [0u8; 128];
    let bytes = value.as_bytes();
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    (bytes.len() < out.len()).then_some(out)
}
