fn main() {
    eprintln!("redisraft-jepsen: not built yet");
    std::process::exit(2);
}
