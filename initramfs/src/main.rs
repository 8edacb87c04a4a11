fn main() {
    std::process::exit(70);
}
