from bench.machine import main

main()
