//! The node's TUN device: made with tun-rs (with offload: `IFF_VNET_HDR`, TSO and checksum
//! offload) or, without offload, by our own `TUNSETIFF` with `IFF_NAPI`, which tun-rs has no
//! switch for. Every `unsafe` of the TUN device is here.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::net::links::IfName;

/// Opens a queue of the TUN device `name`, with or without offload, creating the device if
/// there is none. With `multi_queue` the device takes more queues, each opened by a call of its
/// own with the same settings.
pub fn open(
    name: &IfName,
    offload: bool,
    multi_queue: bool,
) -> std::io::Result<tun_rs::AsyncDevice> {
    if offload {
        tun_rs::DeviceBuilder::new()
            .name(name.as_str())
            .offload(true)
            .multi_queue(multi_queue)
            .packet_information(false)
            .build_async()
    } else {
        open_napi(name, multi_queue)
    }
}

/// Creates the device for the mode without offload, with IFF_NAPI (tun-rs has no switch for
/// it): packets written to the device then go through the kernel's GRO, which merges a TCP
/// stream's MTU-sized packets back into large ones before they are routed, so routing, the veth
/// and the receiving TCP run once per merged packet instead of once per 1400 bytes.
fn open_napi(name: &IfName, multi_queue: bool) -> std::io::Result<tun_rs::AsyncDevice> {
    use std::os::fd::IntoRawFd;
    /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in a 24-byte union.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        rest: [u8; 22],
    }
    const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let queues = if multi_queue {
        libc::IFF_MULTI_QUEUE
    } else {
        0
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_NAPI | queues) as libc::c_short,
        rest: [0; 22],
    };
    // An IfName has at most 15 bytes, so the name stays NUL-terminated.
    req.name[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (same size, the
    // fields where the kernel looks), alive for the call; the descriptor is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is a TUN device with IFF_NO_PI framing and without IFF_VNET_HDR,
    // as `from_fd` requires; it is handed over and closed by the device.
    unsafe { tun_rs::AsyncDevice::from_fd(file.into_raw_fd()) }
}

/// A second descriptor of the device (same queue, same flags), for I/O beside tokio's.
pub fn duplicate(dev: &tun_rs::AsyncDevice) -> std::io::Result<std::fs::File> {
    // SAFETY: the descriptor is `dev`'s, open for as long as this call (it borrows `dev`); it is
    // duplicated at once and only the duplicate is kept.
    let fd = unsafe { BorrowedFd::borrow_raw(dev.as_raw_fd()) }.try_clone_to_owned()?;
    Ok(std::fs::File::from(fd))
}
