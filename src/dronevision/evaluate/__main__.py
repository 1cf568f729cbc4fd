from dronevision.evaluate.command import main

main()
