from bench.props import main

main()
