//! `cargo run --example decode -- in.jpg out.rgb`: decode to raw packed RGB (for comparisons).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: decode IN.jpg OUT.rgb");
        std::process::exit(2);
    }
    let data = std::fs::read(&args[1]).expect("read input");
    match jpeg_exact::decode_rgb(&data, 1 << 28) {
        Ok((w, h, rgb)) => {
            std::fs::write(&args[2], rgb).expect("write output");
            println!("{w} {h}");
        }
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1);
        }
    }
}
