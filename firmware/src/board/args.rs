//! The program's semihosting arguments (QEMU's `-semihosting-config arg=...`).

/// Calls `f` with each argument, in order. (One copy of the reading, whatever asks.)
#[inline(never)]
fn each(f: &mut dyn FnMut(&str)) {
    let Ok(args) = semihosting::experimental::env::args::<256>() else {
        return;
    };
    for arg in (&args).into_iter().flatten() {
        f(arg);
    }
}

/// `true` if one of the arguments is `flag`.
pub fn has(flag: &str) -> bool {
    let mut found = false;
    each(&mut |a| found |= a == flag);
    found
}

/// The rest of the first argument that starts with `prefix` (`flash=` of `flash=PATH`),
/// NUL-terminated in 128 bytes; `None` if there is none or it does not fit.
pub fn value(prefix: &str) -> Option<[u8; 128]> {
    let (mut out, mut seen) = (None, false);
    each(&mut |a| {
        if seen {
            return;
        }
        if let Some(value) = a.strip_prefix(prefix) {
            seen = true;
            let mut buf = [0u8; 128];
            let bytes = value.as_bytes();
            if let Some(dst) = buf.get_mut(..bytes.len()).filter(|_| bytes.len() < 128) {
                dst.copy_from_slice(bytes);
                out = Some(buf);
            }
        }
    });
    out
}
